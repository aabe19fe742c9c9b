"""The training loop, written once for every method.

In outline (see :func:`train`)::

    method = get_method(config["method"])(config)          # seeded with `seed`: same init on every rank
    model = DDP(method) if world_size > 1 else method
    while step < steps:
        for batch in method.train_batches(LoaderSpec(..., epoch, skip_batches)):
            on_step(step) before the first micro-batch of a step
            plain: outputs = model(batch) under autocast; loss = sum of outputs["loss*"]
                   backward (loss / accum_steps), under no_sync except on the last micro-batch
            exact: keep the micro-batch; after accum_steps of them, _Run.exact_step (feature caching)
            after accum_steps micro-batches: unscale, clip, optimiser step, schedule step
            log every log_every steps, save (and plot curves.png) every save_every steps and at the end
        epoch += 1

Every rank draws its batches in lockstep: when one rank's data ends, all ranks end the epoch, so
uneven shards never hang a collective. A method's outputs may carry ``skipped`` (corrupt samples
dropped in the batch); it is summed over ranks and logged as a running total.

Before any set-up, the run folder is checked writable and locked (:func:`annofree.folders.open_out_dir`,
by rank 0 only), so a read-only disk or a second run into the same folder is refused at once. The data
is recorded in the saved config (``train.data``, absolute), so ``--resume`` needs only the folder. A
resume writes nothing until its first checkpoint: a refused one leaves the run as it was. ``resume="auto"``
(``--auto-resume``) resumes when the folder holds a training state and starts fresh otherwise, so one command
serves the first launch and every elastic restart (``torchrun --max-restarts``, a requeued job). SIGINT and
SIGTERM save a checkpoint at the next step boundary and raise
:class:`~annofree.engine.interrupt.Interrupted` (see :mod:`annofree.engine.interrupt`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from annofree.data.sampling import derive_seed
from annofree.engine import checkpoint, distributed
from annofree.engine.checkpoint import Progress
from annofree.engine.compiled import compile_forward
from annofree.engine.config import (
    OptimSection,
    TrainSection,
    accum_mode,
    check_method_config,
    check_resume,
    flatten,
    load_config,
    resolve_engine_config,
    resolve_path_value,
)
from annofree.engine.interrupt import Interrupted, StopRequests
from annofree.engine.logging import RunLogger
from annofree.engine.optim import build_optimizer, build_schedule
from annofree.errors import UserError
from annofree.folders import FolderLock, open_out_dir
from annofree.methods import get_method
from annofree.methods.base import Embedded, LoaderSpec, Method
from annofree.precision import AUTOCAST_DTYPES, describe, resolve_precision
from annofree.pretrained import load_into
from annofree.weights import WEIGHTS_NAME

SKIPPED_KEY = "skipped"


@dataclasses.dataclass
class TrainResult:
    """What a finished run leaves: its directory, the weights file, where it stopped and the last log record."""

    out_dir: Path
    weights: Path
    step: int
    epoch: int
    metrics: dict[str, Any]
    method: Method  # the trained method (unwrapped, on the training device)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move the tensors inside dicts, lists, tuples (named too) and dataclasses to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        moved = {key: to_device(value, device) for key, value in obj.items()}
        try:
            return type(obj)(moved)
        except TypeError:  # a mapping type that cannot be built from a dict (defaultdict, ...)
            return moved
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(value, device) for value in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(value, device) for value in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **fields)
    return obj


_END = object()


def lockstep(batches: Iterable[Any]) -> Iterator[Any]:
    """Yield batches while every rank still has one (one tiny CPU all-reduce per batch when distributed)."""
    iterator = iter(batches)
    while True:
        batch = next(iterator, _END)
        if not distributed.all_true(batch is not _END):
            return
        yield batch


def objective(outputs: Any, method_name: str) -> torch.Tensor:
    """The sum of the outputs whose name starts with ``loss`` (in fp32, whatever autocast produced)."""
    if not isinstance(outputs, Mapping):
        raise TypeError(f"{method_name}.forward must return a dict of named scalars, got {type(outputs).__name__}")
    losses = [value.float() for key, value in outputs.items() if key.startswith("loss")]
    if not losses:
        raise ValueError(f"{method_name}.forward returned no entry named loss* (got {', '.join(outputs) or 'none'})")
    return torch.stack(losses).sum()


def _total_key(outputs: Mapping[str, Any]) -> str | None:
    """Log name of the summed loss: ``loss``, or ``loss_total`` when the method already has a ``loss`` entry
    next to others; None when the method's single ``loss`` is the total."""
    loss_keys = [k for k in outputs if k.startswith("loss")]
    if "loss" not in outputs:
        return "loss"
    return "loss_total" if len(loss_keys) > 1 else None


class _Window:
    """Sums of the outputs since the last log (kept on the device: no synchronisation per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.grad_norm: torch.Tensor | float = 0.0
        self.micro_batches = 0
        self.steps = 0
        self.skipped: torch.Tensor | float = 0.0
        self.has_skipped = False
        self.started = time.perf_counter()
        self.excluded_s = 0.0  # time spent saving checkpoints, not training

    def seconds(self) -> float:
        return max(time.perf_counter() - self.started - self.excluded_s, 1e-9)

    def add_micro_batch(self, outputs: Mapping[str, Any], loss: torch.Tensor, count: int = 1) -> None:
        """``count`` > 1: the outputs of a whole exact step (means over its ``count`` micro-batches, ``skipped``
        their sum), weighted as that many micro-batches so that means and images/s stay per micro-batch."""
        self.micro_batches += count
        named = dict(outputs)
        total_key = _total_key(outputs)
        if total_key is not None:
            named[total_key] = loss
        for key, value in named.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            if value.numel() != 1:
                raise ValueError(f"output {key!r} has shape {tuple(value.shape)}; outputs must be scalars")
            value = value.reshape(())
            if key == SKIPPED_KEY:
                self.skipped = self.skipped + value
                self.has_skipped = True
            else:
                value = value * count
                self.sums[key] = self.sums[key] + value if key in self.sums else value

    def add_step(self, grad_norm: torch.Tensor) -> None:
        self.steps += 1
        self.grad_norm = self.grad_norm + grad_norm.detach().float()

    def take_skipped(self) -> int:
        """Skipped samples since the last call, summed over ranks (collective when the method reports them)."""
        if not self.has_skipped:
            return 0
        local = float(self.skipped.item()) if isinstance(self.skipped, torch.Tensor) else float(self.skipped)
        self.skipped = 0.0
        return round(distributed.reduce_sum({SKIPPED_KEY: local})[SKIPPED_KEY])

    def means(self) -> dict[str, float]:
        """Per-micro-batch means of the outputs and the per-step mean gradient norm, averaged over ranks."""
        values = {key: (total / max(self.micro_batches, 1)).item() for key, total in self.sums.items()}
        if self.steps:
            values["grad_norm"] = float(self.grad_norm / self.steps)
        return distributed.reduce_mean(values)


def _leaf(value: torch.Tensor) -> torch.Tensor:
    """A floating tensor of the first pass as a leaf that collects its gradient (others as they are)."""
    return value.detach().requires_grad_() if value.is_floating_point() else value


def _grad(leaf: torch.Tensor) -> torch.Tensor:
    """The gradient a leaf collected; zeros when the losses did not use it (every output of DDP's forward is
    backwarded, so that DDP with find_unused_parameters never waits for a parameter it saw used)."""
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)


def _step_metrics(metrics: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """The micro-batches' metrics of one exact step: ``skipped`` summed, every other one averaged."""
    merged = {}
    for key in metrics[0]:
        values = torch.stack([torch.as_tensor(m[key]).float().reshape(()) for m in metrics])
        merged[key] = values.sum() if key == SKIPPED_KEY else values.mean()
    return merged


def _wrap(method: Method, env: distributed.DistEnv, find_unused: bool) -> nn.Module:
    """DDP over the whole method when there are several processes (SyncBatchNorm on CUDA only)."""
    if not env.distributed:
        return method
    if env.device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(method)  # replaces the children in place
        return DistributedDataParallel(method, device_ids=[env.device.index], find_unused_parameters=find_unused)
    return DistributedDataParallel(method, find_unused_parameters=find_unused)


def _previous_state(out_dir: Path, resume: bool) -> dict[str, Any] | None:
    """The saved training state to resume from; refuses to start a fresh run over an existing one."""
    if resume:
        return checkpoint.load_state(out_dir)  # raises the clear "nothing to resume" error
    if checkpoint.has_state(out_dir):
        raise UserError(
            f"{out_dir} already holds a training run ({checkpoint.STATE_NAME}); "
            "pass --resume to continue it or choose another --out"
        )
    return None


def train(
    config: dict[str, Any], out_dir: str | Path, *, data: str | None = None, resume: bool | str = False
) -> TrainResult:
    """Train ``config["method"]`` into ``out_dir``; with ``resume``, continue exactly from its last checkpoint.

    ``data`` is the method's data (shard pattern, folder, ...); ``config["train"]["data"]`` when None (a
    resumed run's saved config holds the data it was started with). ``resume="auto"`` resumes when
    ``out_dir`` holds a training state and starts a fresh run otherwise (for launchers that restart the same
    command). Launch under ``torchrun`` for several processes; without it this is a single process.
    """
    cfg = resolve_engine_config(config)
    if not cfg["method"]:
        raise UserError("the config names no method (set `method: NAME`)")
    method_cls = get_method(cfg["method"])
    out_dir = Path(out_dir)
    resume = _wants_resume(resume, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the run (it is created if missing)")
    if data is not None:  # relative to the working directory, recorded absolute for a resume from anywhere
        cfg["train"]["data"] = resolve_path_value("train.data", data, Path.cwd())
    elif resume and not cfg["train"]["data"]:
        cfg["train"]["data"] = _saved_data(out_dir)
    check_method_config(cfg, method_cls)  # every section (the data's too), before any work
    if not resume:
        _check_data(cfg)  # (a resume says first whether the run itself fits)
    if resume and not checkpoint.has_state(out_dir):
        checkpoint.load_state(out_dir)  # the clear "nothing to resume" error, before anything is created
    env = distributed.setup(cfg["train"]["device"])
    _check_same_run_folder(out_dir, resume)
    lock = _open_run_dir(out_dir, env)
    try:
        state = _previous_state(out_dir, resume)
        if state is not None and (out_dir / checkpoint.CONFIG_NAME).is_file():
            check_resume(load_config(out_dir / checkpoint.CONFIG_NAME, defaults=None), cfg, method_cls.model_section)
        if state is not None and state["step"] > cfg["train"]["steps"]:
            raise UserError(
                f"{out_dir}: the checkpoint is at step {state['step']}, beyond train.steps={cfg['train']['steps']}"
            )
        if resume:  # a fresh run checked its data above, before the lock
            _check_data(cfg)
        return _train(cfg, method_cls, out_dir, cfg["train"]["data"], state, env)
    finally:
        if lock is not None:
            lock.release()


def _wants_resume(resume: bool | str, out_dir: Path) -> bool:
    """``resume`` as a yes or no: ``"auto"`` is yes when ``out_dir`` holds a training state."""
    if resume == "auto":
        return checkpoint.has_state(out_dir)
    if isinstance(resume, bool):
        return resume
    raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")


def _check_same_run_folder(out_dir: Path, resume: bool) -> None:
    """Every rank reads the checkpoint it resumes from (only rank 0 writes it), so all ranks must see one
    folder: nodes that each have their own would start some ranks afresh and resume others (collective)."""
    seen = distributed.all_gather_objects(resume)
    if len(set(seen)) > 1:
        without = ", ".join(str(rank) for rank, has in enumerate(seen) if not has)
        raise UserError(
            f"{out_dir}: rank(s) {without} find no training state there but others do; put --out on a file "
            "system that every node shares"
        )


def _check_data(cfg: dict[str, Any]) -> None:
    if not cfg["train"]["data"]:
        raise UserError("no training data: give --data PATTERN or set train.data in the config")


def _saved_data(out_dir: Path) -> str | None:
    """The data recorded in a run's saved config (None when it has none)."""
    saved = out_dir / checkpoint.CONFIG_NAME
    if not saved.is_file():
        return None
    return load_config(saved, defaults=None).get("train", {}).get("data")


def _open_run_dir(out_dir: Path, env: distributed.DistEnv) -> FolderLock | None:
    """Rank 0 checks ``out_dir`` writable and takes its lock; every rank learns whether that worked."""
    lock, error = None, None
    if env.is_main:
        try:
            lock = open_out_dir(out_dir, "--out")
        except UserError as exc:
            error = exc
    if distributed.all_true(error is None):
        return lock
    if error is not None:
        raise error
    raise UserError(f"{out_dir}: rank 0 could not open the run folder (see its message)")


class _Run:
    """The objects of one run (method, DDP wrapper, optimiser, schedule, scaler) and what a step does with them."""

    def __init__(self, cfg: dict[str, Any], method_cls: type[Method], env: distributed.DistEnv):
        optim, train = OptimSection.from_dict(cfg["optim"]), TrainSection.from_dict(cfg["train"])
        self.env = env
        self.accum_steps = optim.accum_steps
        self.exact = accum_mode(cfg, method_cls) == "exact"
        self.seed = cfg["seed"]
        self.global_batch = train.batch_size * env.world_size * self.accum_steps
        # The same seed on every rank before building, so the initial weights do not depend on the world size.
        distributed.seed_everything(cfg["seed"])
        self.method = method_cls(cfg)
        if train.init_weights:  # start from trained weights (a resume then loads its own state over them)
            load_into(self.method.deployable(), train.init_weights, method_cls.name)
        self.method.to(env.device)
        self.model = _wrap(self.method, env, train.find_unused_parameters)
        # Lines for the log: kept until the logger exists (_Session._open_logger logs them, then points `say` at it).
        self.pending_lines: list[str] = []
        self.say: Callable[[str], None] = self.pending_lines.append
        self.compiled = (
            compile_forward(self.method, lambda text: self.say(text), env.device, "train.compile")
            if train.compile
            else None
        )
        self.optimizer = build_optimizer(self.method, optim, lr=optim.lr, no_weight_decay=self.method.no_weight_decay())
        self.schedule = build_schedule(self.optimizer, optim, train.steps, self.global_batch)
        # train.precision auto resolves here, per machine: the same config runs bf16 where that is native.
        self.precision, precision_reason = resolve_precision(train.precision, env.device)
        self.precision_note = describe(train.precision, self.precision, precision_reason)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.precision == "fp16")
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.amp_dtype = AUTOCAST_DTYPES[self.precision]
        self.clip = optim.clip_grad or math.inf

    def load(self, state: dict[str, Any]) -> None:
        try:
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError):  # a torch dump of every tensor: say what differs in one line
            differs = checkpoint.state_mismatch(self.method.state_dict(), state["method"]) or "the optimiser state"
            raise UserError(f"cannot resume: the saved training state does not fit this config ({differs})") from None
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])

    def forward_backward(self, batch: Any, last_micro_batch: bool) -> tuple[Mapping[str, Any], torch.Tensor]:
        """One micro-batch: forward under autocast, backward of its share of the step's loss.

        DDP all-reduces gradients only on the last micro-batch of a step (``no_sync`` before it).
        """
        device = self.env.device
        sync = nullcontext() if last_micro_batch or not self.env.distributed else self.model.no_sync()
        with sync:
            with self.autocast():
                outputs = self.model(to_device(batch, device))
            loss = objective(outputs, self.method.name)
            self.scaler.scale(loss / self.accum_steps).backward()
        return outputs, loss

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    @contextlib.contextmanager
    def micro_batch_rng(self, step: int, index: int) -> Iterator[None]:
        """Torch's random draws (Gumbel noise, drop path, dropout) seeded from (seed, step, global micro-batch
        index) alone, so that both passes of exact accumulation draw the same noise, whatever the K x ranks
        layout; the run's own stream continues untouched afterwards."""
        devices = [self.env.device] if self.env.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed("exact accumulation", self.seed, step, index))
            yield

    def exact_step(self, batches: list[Any], step: int) -> tuple[dict[str, Any], torch.Tensor]:
        """The gradients of one optimiser step from this rank's ``accum_steps`` micro-batches, the losses taken
        over all of them and over every rank's at once (feature caching; see docs/large-batch.md):

        1. embed each micro-batch without a graph (the method itself, not DDP), its noise seeded from
           (seed, step, rank * K + i);
        2. the losses on the concatenated embeddings (leaves; the losses' all-gather adds the other ranks'),
           backward to the embeddings;
        3. embed each micro-batch again through DDP with the same noise and backward the cached gradients
           (DDP all-reduces on the last one only; the shared tensors, e.g. the logit scale, go with it).

        Buffers (BatchNorm's running statistics) keep the first pass's update, one per micro-batch. Returns the
        step's outputs (losses over the whole step, the micro-batches' mean metrics, ``skipped`` summed) and the
        objective.
        """
        if len(batches) != self.accum_steps:
            raise ValueError(f"exact_step takes optim.accum_steps={self.accum_steps} micro-batches, got {len(batches)}")
        first = self.env.rank * len(batches)  # global index of this rank's first micro-batch
        if len(batches) == 1:  # nothing to cache: one pass is the same maths
            with self.micro_batch_rng(step, first):
                return self.forward_backward(batches[0], last_micro_batch=True)
        device = self.env.device
        with torch.no_grad():
            cached = []
            for i, batch in enumerate(batches):
                with self.micro_batch_rng(step, first + i), self.autocast():
                    cached.append(self.method(to_device(batch, device), embed_only=True))
        buffers = {name: value.clone() for name, value in self.method.named_buffers()}
        samples = {key: torch.cat([e.samples[key] for e in cached]) for key in cached[0].samples}
        samples = {key: _leaf(value) for key, value in samples.items()}
        shared = {key: _leaf(value) for key, value in cached[0].shared.items()}
        with self.autocast():
            losses = self.method.losses(Embedded(samples, shared, {}))
        loss = objective(losses, self.method.name)
        self.scaler.scale(loss).backward()

        sizes = [len(next(iter(e.samples.values()))) for e in cached]
        sample_grads = {key: _grad(leaf).split(sizes) for key, leaf in samples.items() if leaf.requires_grad}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = nullcontext() if last or not self.env.distributed else self.model.no_sync()
            with sync:
                with self.micro_batch_rng(step, first + i), self.autocast():
                    again = self.model(to_device(batch, device), embed_only=True)
                pairs = [(again.samples[key], grads[i]) for key, grads in sample_grads.items()]
                if last:
                    pairs += [(again.shared[key], _grad(leaf)) for key, leaf in shared.items() if leaf.requires_grad]
                pairs = [(tensor, grad) for tensor, grad in pairs if tensor.requires_grad]
                torch.autograd.backward([tensor for tensor, _ in pairs], [grad for _, grad in pairs])
        with torch.no_grad():
            for name, value in self.method.named_buffers():
                value.copy_(buffers[name])
        outputs = {key: value.detach() for key, value in losses.items()}
        outputs.update(_step_metrics([e.metrics for e in cached]))
        return outputs, loss

    def optimizer_step(self) -> tuple[float, torch.Tensor]:
        """Unscale, clip, step, advance the schedule -> (the lr this step used, the gradient norm)."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return lr, grad_norm

    def save(self, out_dir: Path, progress: Progress) -> None:
        checkpoint.save_checkpoint(
            out_dir,
            method=self.method,
            optimizer=self.optimizer,
            schedule=self.schedule,
            scaler=self.scaler,
            progress=progress,
            device=self.env.device,
        )


def _train(
    cfg: dict[str, Any],
    method_cls: type[Method],
    out_dir: Path,
    data: str,
    state: dict[str, Any] | None,
    env: distributed.DistEnv,
) -> TrainResult:
    """Build the run, restore ``state`` (a resume) and train to ``train.steps``."""
    session = _Session(cfg, _Run(cfg, method_cls, env), out_dir, data, state, env)
    session.train()
    progress, method = session.progress, session.run.method
    if env.is_main:
        print(f"{method.name}: step {progress.step}/{session.total}, weights in {out_dir / WEIGHTS_NAME}", flush=True)
    return TrainResult(
        out_dir=out_dir,
        weights=out_dir / WEIGHTS_NAME,
        step=progress.step,
        epoch=progress.epoch,
        metrics=session.record,
        method=method,
    )


def _restore(
    run: _Run, cfg: dict[str, Any], out_dir: Path, state: dict[str, Any] | None, env: distributed.DistEnv
) -> tuple[Progress, list[str]]:
    """Where the session starts and the notes it logs first. A fresh run seeds each rank's stream with
    ``seed + rank``; a resume loads the state and continues the saved streams (under another world size,
    fresh ones tied to the step)."""
    notes = distributed.launch_warnings()
    if state is None:
        distributed.seed_everything(cfg["seed"] + env.rank)
        return Progress(), notes
    run.load(state)
    progress = checkpoint.progress_of(state)
    notes += _resume_notes(cfg, out_dir, state, env)
    if state["world_size"] == env.world_size:
        checkpoint.restore_rng(state["rng"][env.rank], env.device)
    else:  # another world size: the ranks' streams cannot continue; start fresh ones tied to the step
        distributed.seed_everything(cfg["seed"] + env.rank + 7919 * progress.step)
    return progress, notes


class _Session:
    """One session of a run: the loop over epochs and micro-batches, its log records, checkpoints and stops."""

    def __init__(
        self,
        cfg: dict[str, Any],
        run: _Run,
        out_dir: Path,
        data: str,
        state: dict[str, Any] | None,
        env: distributed.DistEnv,
    ):
        self.cfg, self.run, self.out_dir, self.data, self.env = cfg, run, out_dir, data, env
        self.train_section = train = TrainSection.from_dict(cfg["train"])
        self.total, self.accum, self.batch_size = train.steps, run.accum_steps, train.batch_size
        self.progress, notes = _restore(run, cfg, out_dir, state, env)
        # A resume writes its config with its first checkpoint: a refused one writes nothing.
        self.config_written = state is None
        if self.config_written:
            checkpoint.write_config(cfg, out_dir)
        self.logger = self._open_logger(notes)
        self.record: dict[str, Any] = {}  # the last log record
        self.last_saved = self.progress.step
        self.session_start, self.elapsed_before = time.perf_counter(), self.progress.elapsed_s
        self.window = _Window()
        self.micro = 0  # micro-batches accumulated towards the next optimiser step
        self.pending: list[Any] = []  # exact mode: this step's micro-batches, embedded together once all have come

    def _open_logger(self, notes: list[str]) -> RunLogger:
        """The run's logger, with the run's first line, the set-up's and the resume's notes logged."""
        run, env, name = self.run, self.env, self.run.method.name
        logger = RunLogger(
            self.out_dir,
            total_steps=self.total,
            start_step=self.progress.step,
            enabled=env.is_main,
            tensorboard=self.train_section.tensorboard,
            description=name,
        )
        logger.message(
            f"{name}: {sum(p.numel() for p in run.params):,} trainable parameters, {env.world_size} process(es) "
            f"on {env.device.type}, global batch {run.global_batch} ({self.batch_size} x {env.world_size} x "
            f"{self.accum}, {_accumulation_words(run.exact, self.batch_size * env.world_size)}), "
            f"peak lr {run.schedule.curve['lr']:.3g}, {run.precision_note}"
            f"{', compiled' if run.compiled is not None else ''}, out {self.out_dir}"
        )
        for note in [*run.pending_lines, *notes]:
            logger.message(note)
        run.say = logger.message
        if self.progress.step >= self.total:
            logger.message(
                f"the run is already at step {self.progress.step} of {self.total}: nothing to train (raise train.steps)"
            )
        return logger

    def train(self) -> None:
        """Epochs until ``train.steps``; SIGINT / SIGTERM save at the next step boundary and raise Interrupted."""
        self.run.model.train()
        stop = StopRequests(announce=self.env.is_main)
        try:
            stop.__enter__()
            while self.progress.step < self.total:
                self.epoch(stop)
        except Interrupted as exc:
            if not exc.message:  # a second signal, raised at once wherever the loop was
                raise Interrupted(exc.signum, self._stopped_message(exc.signum, self.last_saved)) from None
            raise
        finally:
            stop.__exit__()
            self.logger.write_curves()  # a run stopped early still gets its plot; a no-op after the last save's
            self.logger.close()

    def epoch(self, stop: StopRequests) -> None:
        """The rest of the current epoch (from ``batches_in_epoch``), or up to the last step."""
        progress = self.progress
        spec = LoaderSpec(
            data=self.data,
            batch_size=self.batch_size,
            rank=self.env.rank,
            world_size=self.env.world_size,
            num_workers=self.train_section.num_workers,
            seed=self.cfg["seed"],
            epoch=progress.epoch,
            skip_batches=progress.batches_in_epoch,
        )
        yielded = 0
        for batch in lockstep(self.run.method.train_batches(spec)):
            yielded += 1
            progress.batches_in_epoch += 1
            if not self.micro_batch(batch):
                continue
            self.optimizer_step()
            if progress.step >= self.total:
                return
            self.stop_if_asked(stop)
        if yielded == 0 and spec.skip_batches == 0:
            raise UserError(
                f"no training data: {self.run.method.name} yielded no batch for epoch {progress.epoch} "
                f"from {self.data!r} (give --data or train.data)"
            )
        progress.epoch += 1
        progress.batches_in_epoch = 0

    def micro_batch(self, batch: Any) -> bool:
        """Forward and backward of one micro-batch (exact mode: of the step's, once all have come); True when
        the step's gradients are complete."""
        run = self.run
        if self.micro == 0:
            run.method.on_step(self.progress.step, self.total)
        self.micro += 1
        if run.exact:
            self.pending.append(batch)  # kept across an epoch boundary, as plain mode carries `micro`
            if self.micro < self.accum:
                return False
            outputs, loss = run.exact_step(self.pending, self.progress.step)
            self.window.add_micro_batch(outputs, loss, count=self.accum)
            self.pending = []
        else:
            outputs, loss = run.forward_backward(batch, last_micro_batch=self.micro == self.accum)
            self.window.add_micro_batch(outputs, loss)
            if self.micro < self.accum:
                return False
        self.micro = 0
        return True

    def optimizer_step(self) -> None:
        """Step the optimiser, then log and save when the step is due for it."""
        lr, grad_norm = self.run.optimizer_step()
        step = self.progress.step = self.progress.step + 1
        self.window.add_step(grad_norm)
        self.logger.advance()
        last = step == self.total
        if step % self.train_section.log_every == 0 or last:
            self.log(lr)
        save_every = self.train_section.save_every
        if (save_every and step % save_every == 0) or last:
            self.checkpoint()

    def log(self, lr: float) -> None:
        """Close the window into a log record; stop on a NaN or infinite loss."""
        self.progress.skipped += self.window.take_skipped()
        self.progress.elapsed_s = self.elapsed_s()
        self.record = _record(self.progress, lr, self.window, self.batch_size * self.env.world_size)
        self.logger.log(self.record)
        _check_finite(self.record, self.train_section.precision, self.out_dir, self.last_saved)
        self.window = _Window()

    def checkpoint(self) -> None:
        """Save and redraw the curves; the time that takes is left out of the window's throughput."""
        saving_since = time.perf_counter()
        self.progress.skipped += self.window.take_skipped()
        self.progress.elapsed_s = self.elapsed_before + saving_since - self.session_start
        self.save()
        self.logger.write_curves()
        self.window.excluded_s += time.perf_counter() - saving_since

    def stop_if_asked(self, stop: StopRequests) -> None:
        """When every rank has seen SIGINT or SIGTERM: save (unless this step is saved) and raise Interrupted."""
        signum = stop.agreed()
        if signum is None:
            return
        if self.last_saved != self.progress.step:
            self.progress.skipped += self.window.take_skipped()
            self.progress.elapsed_s = self.elapsed_s()
            self.save()
        raise Interrupted(signum, self._stopped_message(signum, self.progress.step))

    def save(self) -> None:
        if not self.config_written:
            checkpoint.write_config(self.cfg, self.out_dir)
            self.config_written = True
        self.run.save(self.out_dir, self.progress)
        self.last_saved = self.progress.step

    def elapsed_s(self) -> float:
        """Training time of the run so far, earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self.session_start

    def _stopped_message(self, signum: int, saved_step: int) -> str:
        return _stopped_message(signum, self.run.method.name, self.out_dir, saved_step, self.total)


def _accumulation_words(exact: bool, micro_batch: int) -> str:
    """How the samples of one step meet in the loss, for the run's first log line."""
    if exact:
        return "exact: every sample a negative of every other"
    return f"plain: each loss over its own micro-batch of {micro_batch}"


def _stopped_message(signum: int, method: str, out_dir: Path, saved_step: int, total: int) -> str:
    """What an interrupted run says: where its last checkpoint is and how to continue."""
    import signal

    name = signal.Signals(signum).name
    if not saved_step:
        return f"stopped by {name} before the first checkpoint: nothing saved in {out_dir}"
    launch = "torchrun ... -m annofree" if distributed.world_size() > 1 else "annofree"
    return (
        f"stopped by {name}: step {saved_step} of {total} saved in {out_dir}; continue with "
        f"`{launch} train {method} --out {shlex.quote(str(out_dir))} --resume`"
    )


def _record(progress: Progress, lr: float, window: _Window, images_per_micro_batch: int) -> dict[str, Any]:
    """One log.jsonl record from the window that just closed (collective: averages over ranks)."""
    record: dict[str, Any] = {"step": progress.step, "epoch": progress.epoch, "lr": lr}
    record.update(window.means())
    record["images_per_s"] = window.micro_batches * images_per_micro_batch / window.seconds()
    record["elapsed_s"] = progress.elapsed_s
    if window.has_skipped:
        record[SKIPPED_KEY] = progress.skipped
    return record


def _check_finite(record: dict[str, Any], precision: str, out_dir: Path, last_saved: int) -> None:
    """Stop on a NaN/inf loss (fp16 excepted: its gradient scaler skips such steps by design)."""
    if precision == "fp16":
        return
    bad = [k for k, v in record.items() if k.startswith("loss") and isinstance(v, float) and not math.isfinite(v)]
    if bad:
        saved = f"the last checkpoint in {out_dir} is at step {last_saved}" if last_saved else "no checkpoint yet"
        raise UserError(
            f"{bad[0]} is {record[bad[0]]} at step {record['step']}; {saved} "
            "(lower optim.lr or set optim.clip_grad, then --resume)"
        )


def _resume_notes(cfg: dict[str, Any], out_dir: Path, state: dict[str, Any], env: distributed.DistEnv) -> list[str]:
    """Warnings for a resume that cannot be exact or that runs a different config."""
    notes = [f"resuming from step {state['step']} (epoch {state['epoch']})"]
    if state["world_size"] != env.world_size:
        notes.append(
            f"warning: the run was saved with {state['world_size']} process(es), now {env.world_size}: "
            "it continues, but not exactly as an uninterrupted run would"
        )
    weights_step = checkpoint.weights_step(out_dir)
    if weights_step is not None and weights_step != state["step"]:
        notes.append(
            f"note: {WEIGHTS_NAME} is from step {weights_step}, the training state from step {state['step']}; "
            "resuming from the training state"
        )
    saved_path = out_dir / checkpoint.CONFIG_NAME
    if saved_path.is_file():
        saved = {k: v for k, v in flatten(load_config(saved_path, defaults=None)).items() if not isinstance(v, dict)}
        now = {k: v for k, v in flatten(cfg).items() if not isinstance(v, dict)}
        changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if changed:
            notes.append(f"note: the config differs from the saved run in {', '.join(changed)} (using the new values)")
    return notes
