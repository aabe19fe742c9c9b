"""Peak memory and time of one optimiser step of GroupViT for K = 1, 4, 16 micro-batches at a fixed batch B.

Each row is one training run through the public API (:func:`annofree.engine.trainer.train`) of the packaged
``groupvit/synth_tiny`` model on synthetic captioned scenes that the script renders first, in a fresh
subprocess, for ``optim.accum_mode`` plain and exact (when the engine has it) and ``model.grad_checkpointing``
off and on. A run trains ``1 + steps + 1`` optimiser steps: the first is a warm-up (it also makes AdamW's
state), the next ``steps`` are measured, from the start of step 1 to the start of the step after them (so
the final checkpoint is not measured); the method's ``on_step`` hook, called by the trainer before each
step, marks the boundaries.

- ``step_mb``: the most memory the measured steps took above what the process held when they started (model,
  optimiser state, the loader's buffers). CPU: the peak resident set (Linux ``VmHWM``, reset to the
  current size at the start through ``/proc/self/clear_refs``; elsewhere ``getrusage`` ``ru_maxrss``, which
  cannot be reset, so there a larger peak before the step hides the step's) minus the resident set then.
  The runs set ``MALLOC_MMAP_THRESHOLD_=65536`` (unless it is set already): glibc then gives every block of
  64 KiB or more back to the system when it is freed, so the resident set follows the live tensors. With its
  default (a threshold that rises as blocks are freed) the heap keeps freed activations: the resident set at
  the start already holds the warm-up step's, and the peak then grows with the number of micro-batches
  measured (fragmentation), not with what a step keeps.
  CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the allocated memory then.
- ``peak_mb``: the process's whole peak over the measured steps (RSS or CUDA allocated).
- ``s_per_step``: seconds per optimiser step (K micro-batches, data loading included, as in training);
  ``images_per_s``: K x B / s_per_step.

With ``--direct`` (the default) it also runs K = 1 at batch K x B for each K > 1 (plain, no checkpointing):
the one big batch that exact accumulation of K micro-batches stands in for.

Usage::

    .venv/bin/python benchmarks/accum_memory.py [--batch 32] [--ks 1 4 16] [--steps 1] [--json OUT]
        [--modes plain exact] [--no-direct] [--device cpu|cuda] [--config groupvit/synth_tiny]

Timings are noisy on a shared machine: each row is one run, not a median. The machine is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "groupvit/synth_tiny"
SCENES = 512  # rendered once; the runs cycle through them (epochs)


# --- the child: one training run, measured --------------------------------------------------------------------


class Meter:
    """Memory and time between two step boundaries of one process."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.started_at = 0.0
        self.base_mb = 0.0
        self.result: dict[str, float] = {}

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_mb = torch.cuda.memory_allocated() / 2**20
        else:
            self.base_mb = _reset_peak_rss_mb()
        self.started_at = time.perf_counter()

    def stop(self, steps: int, images_per_step: int) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = _peak_rss_mb()
        seconds = (time.perf_counter() - self.started_at) / steps
        self.result = {
            "step_mb": round(peak - self.base_mb, 1),
            "peak_mb": round(peak, 1),
            "s_per_step": round(seconds, 3),
            "images_per_s": round(images_per_step / seconds, 1),
        }


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


def _reset_peak_rss_mb() -> float:
    """Reset the peak RSS to the current RSS where Linux allows it; the baseline to subtract, in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        current = _status_mb("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return _ru_maxrss_mb()


def _peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else _ru_maxrss_mb()


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration for 1 + steps + 1 steps, measuring steps 1..steps; the figures as a dict."""
    from annofree.engine.config import load_config
    from annofree.engine.trainer import train
    from annofree.methods import get_method

    k, batch, steps = spec["k"], spec["batch"], spec["steps"]
    overrides = [
        f"train.batch_size={batch}",
        f"optim.accum_steps={k}",
        f"train.steps={steps + 2}",
        f"train.device={spec['device']}",
        "train.precision=fp32",
        "train.num_workers=0",
        "train.log_every=1000000",
        "train.save_every=0",
        "train.tensorboard=false",
        "optim.warmup_steps=0",
        "data.shuffle_buffer=64",
        f"+model.grad_checkpointing={str(spec['checkpointing']).lower()}",
    ]
    if spec["mode_known"]:  # an engine without the key accumulates the plain way
        overrides.append(f"optim.accum_mode={spec['mode']}")
    config = load_config(spec["config"], overrides)
    meter = Meter(spec["device"])
    method_cls = get_method(config["method"])
    inner = method_cls.on_step

    def on_step(self, step: int, total_steps: int) -> None:
        if step == 1:
            meter.start()
        elif step == steps + 1:
            meter.stop(steps, k * batch)
        inner(self, step, total_steps)

    method_cls.on_step = on_step
    with tempfile.TemporaryDirectory() as out:
        train(config, Path(out) / "run", data=spec["data"])
    return meter.result


# --- the parent: data, runs, table ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The machine the figures come from, as the project reports it."""
    import torch

    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    info = {
        "cpu": name,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": any(flag.startswith("amx") for flag in flags),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def engine_knows_accum_mode() -> bool:
    from annofree.engine.config import ENGINE_DEFAULTS

    return "accum_mode" in ENGINE_DEFAULTS.get("optim", {})


def render_data(root: Path, image_size: int) -> str:
    from annofree.data.synth import SceneConfig, write_scenes

    summary = write_scenes(root, train=SCENES, val=0, cfg=SceneConfig(size=image_size), samples_per_shard=SCENES,
                           workers=1, progress=False)  # fmt: skip
    return summary.train_pattern


def plan(args: argparse.Namespace, modes: list[str]) -> list[dict[str, Any]]:
    runs = []
    for mode in modes:
        for checkpointing in (False, True):
            runs += [{"mode": mode, "checkpointing": checkpointing, "k": k, "batch": args.batch} for k in args.ks]
    if args.direct:
        runs += [{"mode": "direct", "checkpointing": False, "k": 1, "batch": k * args.batch} for k in args.ks if k > 1]
    return runs


def run_one(run: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    spec = {**common, **run, "mode": "plain" if run["mode"] == "direct" else run["mode"]}
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}  # the resident set follows the live tensors (above)
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"run {run} failed (exit {done.returncode}): {tail[0]}")
    return {**run, **json.loads(lines[-1][len("RESULT ") :])}


def memory_growth(results: list[dict[str, Any]], batch: int) -> dict[str, float]:
    """step_mb at the largest K over step_mb at the smallest, per accumulation (mode and checkpointing) and for
    the direct big batches (K x B in one micro-batch, beside plain K = 1 at B)."""
    rows: dict[str, dict[int, float]] = {}
    for run in results:
        if run["mode"] == "direct":
            rows.setdefault("direct", {})[run["batch"] // batch] = run["step_mb"]
        else:
            name = f"{run['mode']}{' +ckpt' if run['checkpointing'] else ''}"
            rows.setdefault(name, {})[run["k"]] = run["step_mb"]
    if "direct" in rows and 1 in rows.get("plain", {}):
        rows["direct"][1] = rows["plain"][1]
    return {name: round(by_k[max(by_k)] / by_k[min(by_k)], 2) for name, by_k in rows.items() if len(by_k) > 1}


def describe(run: dict[str, Any]) -> str:
    mode = "direct" if run["mode"] == "direct" else f"{run['mode']}{' +ckpt' if run['checkpointing'] else ''}"
    return (
        f"{mode:<12} K={run['k']:<3} B={run['batch']:<4} step {run['step_mb']:>7.1f} MB  "
        f"peak {run['peak_mb']:>7.1f} MB  {run['s_per_step']:>7.2f} s/step  {run['images_per_s']:>6.1f} img/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="B, images per micro-batch")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16], help="micro-batches per step")
    parser.add_argument("--steps", type=int, default=1, help="measured optimiser steps per run")
    parser.add_argument("--modes", nargs="+", default=["plain", "exact"], choices=["plain", "exact"])
    parser.add_argument("--direct", action=argparse.BooleanOptionalAction, default=True,
                        help="also run K=1 at batch K x B (what accumulation stands in for)")  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0

    from annofree.engine.config import load_config

    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    known = engine_knows_accum_mode()
    modes = [mode for mode in args.modes if known or mode == "plain"]
    if len(modes) < len(args.modes):
        print("note: this engine has no optim.accum_mode; only plain accumulation is measured", flush=True)
    image_size = load_config(args.config)["model"]["image"]["img_size"]
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = render_data(Path(tmp) / "scenes", image_size)
        common = {"config": args.config, "data": data, "steps": args.steps, "device": args.device,
                  "mode_known": known}  # fmt: skip
        for run in plan(args, modes):
            results.append(run_one(run, common))
            print(describe(results[-1]), flush=True)
    growth = memory_growth(results, args.batch)
    for name, ratio in growth.items():
        print(f"{name}: step memory at K={max(args.ks)} is {ratio:.2f}x that at K={min(args.ks)}"
              + (" (direct: batch K x B in one micro-batch)" if name == "direct" else ""), flush=True)  # fmt: skip
    print(f"{len(results)} runs in {time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        report = {"machine": info, "config": args.config, "batch": args.batch, "steps": args.steps,
                  "step_mb_largest_k_over_smallest": growth, "runs": results}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
