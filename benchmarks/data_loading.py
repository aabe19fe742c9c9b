"""How many DataLoader workers GroupViT training needs: data-loading samples/s per worker beside the training
step's samples/s at the gcc_yfcc config.

1. Makes 224-px JPEG shards (synthetic scenes, quality 95, each with a caption of its own so that the noun
   tagger's per-caption cache does not flatter the figures: real captions rarely repeat) in a temporary folder.
2. Reads them through GroupViT's own training data path, ``GroupViTMethod.train_batches`` (what the trainer
   calls: tar reading, shuffle buffer, JPEG decoding, RandomResizedCrop + flip, CLIP tokenising of the caption and
   its K noun prompts, collation) with 0, 1 and 2 workers, the settings alternating round by round. Samples/s per
   worker = samples / seconds / workers (0 workers: the training process itself), timed from the first batch
   of every worker on, so that worker start-up is left out.
3. Times the training step of the gcc_yfcc config (``configs/groupvit/gcc_yfcc.yaml``, the 50M-parameter model)
   on a batch from that loader: forward under the precision's autocast, the losses (contrastive + multi-label),
   backward, gradient clipping at the config's 5.0 and the engine's AdamW step (as the trainer's step with
   ``optim.accum_steps: 1``), in fp32 and in this machine's ``auto`` precision, alternating step by step.
4. Prints the suggested ``train.num_workers`` = ceil(step samples/s / per-worker samples/s) for each precision.

The figures depend on the machine (printed with them: CPU model, bf16 flags, cores, threads) and on its load;
the per-worker rate of a loaded machine is a lower bound. ``--device cuda`` times the step on a GPU (the loader
stays on the CPU, as in training).

Usage::

    .venv/bin/python benchmarks/data_loading.py [--samples 384] [--batch 16] [--workers 0 1 2] [--rounds 3]
        [--step-batch 8] [--steps 3] [--threads 2] [--device cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from annofree.data import captions as captions_module
from annofree.data.shards import ShardWriter
from annofree.data.synth import SceneConfig, render_scene, scene_rng
from annofree.engine.config import OptimSection, load_config
from annofree.engine.optim import build_optimizer
from annofree.methods.base import LoaderSpec
from annofree.methods.groupvit import GroupViTMethod
from annofree.precision import autocast, cpu_bf16_features, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "groupvit" / "gcc_yfcc.yaml"
IMAGE_SIZE = 224
PLACES = ["on a beach", "in a kitchen", "next to a window", "in the park", "on a wooden table", "in the snow",
          "at night", "under a tree", "in a small room", "near the river"]  # fmt: skip
LOOKS = ["a photo of", "a picture showing", "an image with", "a close-up of", "a view of"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=384, help="samples in the shards (default %(default)s)")
    parser.add_argument("--shard-size", type=int, default=64, help="samples per shard (default %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="loader batch size (default %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the shards per worker count")
    parser.add_argument("--step-batch", type=int, default=8, help="training step batch (default %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu", help="device of the training step (cpu, cuda)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.step_batch < 2:
        parser.error("--step-batch must be at least 2 (the projectors' BatchNorm needs two samples in training)")
    return args


def make_shards(folder: Path, samples: int, shard_size: int) -> str:
    """224-px JPEG shards of synthetic scenes, each caption unique (``LOOKS`` x scene caption x ``PLACES`` x n)."""
    config = SceneConfig(size=IMAGE_SIZE, max_objects=4)
    with ShardWriter(folder, samples_per_shard=shard_size, jpeg_quality=95) as writer:
        for index in range(samples):
            scene = render_scene(scene_rng(0, "bench", index), config)
            caption = f"{LOOKS[index % len(LOOKS)]} {scene.caption} {PLACES[index % len(PLACES)]}, number {index}"
            writer.write(f"{index:09d}", scene.image, caption)
    return writer.pattern


def time_loader(method: GroupViTMethod, data: str, batch: int, workers: int, epoch: int) -> dict[str, float]:
    """One pass over the shards: samples/s in all and per worker, from the first batch of every worker on."""
    captions_module._nouns.cache_clear()  # each pass tags its captions afresh, as unique real captions are
    spec = LoaderSpec(data=data, batch_size=batch, num_workers=workers, seed=0, epoch=epoch)
    stamps, sizes = [], []
    for item in method.train_batches(spec):
        stamps.append(time.perf_counter())
        sizes.append(len(item["image"]))
    warm = max(1, workers)  # worker w's first batch is batch w: all have started after the first `warm`
    if len(stamps) <= warm:
        raise SystemExit(f"too few batches ({len(stamps)}) to time {workers} workers: raise --samples")
    rate = sum(sizes[warm:]) / (stamps[-1] - stamps[warm - 1])
    return {"samples_s": rate, "per_worker_samples_s": rate / max(1, workers), "samples": sum(sizes)}


def loader_figures(method: GroupViTMethod, data: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Median figures per worker count; the order of the counts alternates round by round."""
    runs: dict[int, list[dict[str, float]]] = {workers: [] for workers in args.workers}
    for round_index in range(args.rounds):
        order = args.workers if round_index % 2 == 0 else list(reversed(args.workers))
        for workers in order:
            figures = time_loader(method, data, args.batch, workers, epoch=round_index)
            runs[workers].append(figures)
            print(f"  round {round_index + 1}, {workers} workers: {figures['samples_s']:.1f} samples/s "
                  f"({figures['per_worker_samples_s']:.1f} per worker)")  # fmt: skip
    return {
        workers: {
            "samples_s": statistics.median(run["samples_s"] for run in results),
            "per_worker_samples_s": statistics.median(run["per_worker_samples_s"] for run in results),
        }
        for workers, results in runs.items()
    }


def training_step(method: GroupViTMethod, optimizer, batch: dict, precision: str, device: torch.device, clip: float):
    """One step as the trainer takes it with ``optim.accum_steps: 1``; returns its seconds."""
    start = time.perf_counter()
    with autocast(precision, device):
        outputs = method(batch)
    loss = sum(value for name, value in outputs.items() if name.startswith("loss"))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(method.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def step_figures(method: GroupViTMethod, config: dict, data: str, args: argparse.Namespace) -> dict[str, dict]:
    """Median step time and samples/s per precision (fp32 and auto's choice), alternating step by step."""
    device = torch.device(args.device)
    auto, reason = resolve_precision("auto", device)
    precisions = ["fp32"] if auto == "fp32" else ["fp32", auto]
    spec = LoaderSpec(data=data, batch_size=args.step_batch, seed=0)
    batch = next(iter(method.train_batches(spec)))
    batch = {name: value.to(device) for name, value in batch.items()}
    method.to(device).train()
    optim = OptimSection.from_dict(config["optim"])
    optimizer = build_optimizer(method, optim, lr=1e-4, no_weight_decay=method.no_weight_decay())
    clip = float(config["optim"]["clip_grad"])
    times: dict[str, list[float]] = {precision: [] for precision in precisions}
    for precision in precisions:  # warm-up
        training_step(method, optimizer, batch, precision, device, clip)
    for step in range(args.steps):
        for precision in precisions if step % 2 == 0 else list(reversed(precisions)):
            times[precision].append(training_step(method, optimizer, batch, precision, device, clip))
            print(f"  step {step + 1} {precision}: {times[precision][-1]:.2f} s")
    figures = {
        precision: {"step_s": statistics.median(values), "samples_s": args.step_batch / statistics.median(values)}
        for precision, values in times.items()
    }
    figures["auto"] = {**figures[auto], "resolves_to": auto, "reason": reason}
    return figures


def machine(args: argparse.Namespace) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None
    return {"cpu": cpu, "cpu_bf16": cpu_bf16_features(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(CONFIG)
    torch.manual_seed(0)
    method = GroupViTMethod(config)
    with tempfile.TemporaryDirectory(prefix="annofree-loading-") as folder:
        print(f"making {args.samples} {IMAGE_SIZE}-px JPEG samples ...")
        data = make_shards(Path(folder), args.samples, args.shard_size)
        jpeg_kb = sum(path.stat().st_size for path in Path(folder).glob("*.tar")) / args.samples / 1024
        print(f"data loading (GroupViTMethod.train_batches, batch {args.batch}):")
        loading = loader_figures(method, data, args)
        print(f"training step (gcc_yfcc, batch {args.step_batch}, {args.device}):")
        steps = step_figures(method, config, data, args)
    # One worker's rate: no other worker competes with it for the cores (0 workers: the training process's own).
    basis = 1 if 1 in loading else max(loading)
    per_worker = loading[basis]["per_worker_samples_s"]
    suggested = {precision: math.ceil(figures["samples_s"] / per_worker) for precision, figures in steps.items()}
    about = machine(args)
    results = {"machine": about, "samples": args.samples, "sample_kb": round(jpeg_kb, 1), "loader_batch": args.batch,
               "step_batch": args.step_batch, "loading": {str(k): v for k, v in loading.items()}, "step": steps,
               "per_worker_samples_s": per_worker, "per_worker_basis_workers": basis,
               "suggested_num_workers": suggested}  # fmt: skip

    flags = ", ".join(name for name, present in about["cpu_bf16"].items() if present) or "none"
    load = ", ".join(f"{x:.1f}" for x in about["load_average"])
    gpu = f", step on {about['gpu']}" if about["gpu"] else ""
    print(f"\nmachine: {about['cpu']} ({about['cores']} cores, torch threads {about['threads']}, bf16 flags: {flags}, "
          f"load average {load}){gpu}")  # fmt: skip
    print(f"samples: {IMAGE_SIZE}-px JPEG, {jpeg_kb:.1f} KB each with caption")
    for workers, figures in loading.items():
        print(f"loader, {workers} workers: {figures['samples_s']:7.1f} samples/s "
              f"({figures['per_worker_samples_s']:.1f} per worker)")  # fmt: skip
    for precision in [name for name in steps if name != "auto"]:
        print(f"training step, {precision}: {steps[precision]['samples_s']:7.2f} samples/s "
              f"({steps[precision]['step_s']:.2f} s per step of {args.step_batch})")  # fmt: skip
    auto = steps["auto"]
    print(f"auto precision -> {auto['resolves_to']} ({auto['reason']})")
    for precision, count in suggested.items():
        print(f"suggested train.num_workers ({precision}): ceil({steps[precision]['samples_s']:.2f} / "
              f"{per_worker:.1f}) = {count}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
