"""Process set-up for one or many processes, read from torchrun's environment.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous
address); without them the run is a single process with no process group at all, so no launcher,
environment variable or ``--local_rank`` is needed on one device. The backend is NCCL on CUDA and
gloo on CPU. A second, gloo group carries the small CPU-side exchanges (logged scalars, end-of-data
flags, RNG states) so that they never wait on the GPU stream.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from annofree.errors import UserError

_cpu_group: Any = None  # gloo group for CPU-side exchanges (the default group itself when it is gloo)
_cpu_group_of: Any = None  # the default group that _cpu_group belongs to
_owns_group = False  # setup() created the default group, so shutdown() destroys it


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def choose_device(requested: str, local_rank: int) -> torch.device:
    """``auto`` -> this process's GPU when CUDA is available, else the CPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"train.device: unknown device {requested!r} (auto | cpu | cuda)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("train.device=cuda but CUDA is not available (use train.device=cpu or auto)")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", local_rank)


def setup(device: str = "auto") -> DistEnv:
    """Join the process group that torchrun describes (if any) and pick this process's device.

    The group is created once per process and kept: a later ``train`` call in the same process (a
    script that trains several configs) reuses it, because re-creating a default group on the same
    rendezvous store is not reliable. It is destroyed when the process exits (or by :func:`shutdown`).
    A group that the caller created is used as it is and never destroyed here.
    """
    global _cpu_group, _cpu_group_of, _owns_group
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    existing = dist.is_available() and dist.is_initialized()
    if existing:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size == 1:
        return DistEnv(rank=0, world_size=1, local_rank=0, device=choose_device(device, 0))
    chosen = choose_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)  # before NCCL starts, so that it binds this process's GPU
    if not existing:
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo", rank=rank, world_size=world_size)
        _owns_group = True
        atexit.register(shutdown)
    elif dist.get_backend() == "nccl" and chosen.type != "cuda":
        raise UserError(f"train.device={device} runs on the CPU but the process group uses NCCL")
    if _cpu_group is None or _cpu_group_of is not dist.group.WORLD:  # none yet, or made for an older group
        _cpu_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        _cpu_group_of = dist.group.WORLD
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def shutdown() -> None:
    """Destroy the process group that :func:`setup` created (registered to run at exit)."""
    global _cpu_group, _cpu_group_of, _owns_group
    if _owns_group and dist.is_available() and dist.is_initialized():
        # Wait for every rank first: a rank that tears down while another still talks to the rendezvous
        # store (hosted by rank 0) can abort that rank at exit.
        with contextlib.suppress(RuntimeError):  # another rank died already: destroy our side anyway
            dist.barrier(group=_cpu_group)
        dist.destroy_process_group()
    _owns_group = False
    _cpu_group = _cpu_group_of = None


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True on the process that writes files and shows progress (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier(group=_cpu_group)


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean of each named scalar over processes (every process must pass the same names)."""
    return _all_reduce(values, average=True)


def reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """The sum of each named scalar over processes (every process must pass the same names)."""
    return _all_reduce(values, average=False)


def _all_reduce(values: dict[str, float], average: bool) -> dict[str, float]:
    if not _active() or not values:
        return dict(values)
    names = sorted(values)
    packed = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    dist.all_reduce(packed, group=_cpu_group)
    if average:
        packed /= dist.get_world_size()
    return dict(zip(names, packed.tolist(), strict=True))


def all_true(flag: bool) -> bool:
    """True when ``flag`` is true on every process (e.g. "I still have a batch")."""
    if not _active():
        return flag
    packed = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(packed, op=dist.ReduceOp.MIN, group=_cpu_group)
    return bool(packed.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj, group=_cpu_group)
    return gathered


def launch_warnings() -> list[str]:
    """What to say about how torchrun started this process (one line per problem; none when it is fine).

    torchrun shares its own rendezvous store with the workers by default, and the workers of a restart
    (``--max-restarts``) can then read the previous attempt's connection keys from it: on torch 2.13 with
    gloo, the restarted group failed to connect or hung. ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` gives every
    attempt a fresh store."""
    restarts = _env_int("TORCHELASTIC_MAX_RESTARTS", 0)
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and _env_int("WORLD_SIZE", 1) > 1:
        return [
            f"warning: torchrun --max-restarts {restarts} with its shared store: a restarted job may not connect "
            "(it reads the previous attempt's keys); launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"
        ]
    return []


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python ``random``; the loop uses ``seed + rank``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
