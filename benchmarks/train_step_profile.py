"""CPU time and top ops of annofree's GroupViT training step (the figures of docs/profile.md).

Two workloads, both forward + backward + the engine's optimiser step (``build_optimizer``: AdamW):

- ``bench``: the work of ``benchmarks/train_throughput.py`` (default ``GroupViTConfig``, 8 random images of
  224x224 and 8 random captions, the image-text contrastive loss);
- ``demo``: the demo's model (``configs/groupvit/demo_pretrain.yaml``), 64 synthetic scenes with their
  captions and 8 prompts each, through the GroupViT method's own forward and losses.

Times are CPU time of this process (``time.process_time``), median over the timed steps: on a loaded machine
they move far less than wall time; with one thread (the default) no time is spent spinning. One more step runs
under ``torch.profiler`` for the table of top ops by self time (the profiler times ops by wall clock, so under
load read its shares, not its milliseconds). Compare code versions by running this from each checkout in turn.

Usage::

    .venv/bin/python benchmarks/train_step_profile.py [--work bench|demo] [--precision fp32|bf16] [--steps 5]
        [--threads 1] [--rows 12] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from annofree.engine.config import OptimSection
from annofree.engine.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
OPTIM = OptimSection(weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", choices=["bench", "demo"], default="bench")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: CPU autocast")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one untimed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=12, help="ops in the profile table")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.rows < 1:
        parser.error("need --steps, --threads and --rows >= 1")
    return args


def autocast(precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def bench_step(precision: str) -> Callable[[], None]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_throughput as throughput

    from annofree.losses.contrastive import image_text_contrastive_loss
    from annofree.models import GroupViT, GroupViTConfig

    model = GroupViT(GroupViTConfig()).train()
    pixels, ids = throughput.random_batch(8, throughput.IMAGE_SIZE, 77, model.config.text.vocab_size)
    optimizer = build_optimizer(model, OPTIM, lr=1e-4)

    def step() -> None:
        with autocast(precision):
            image, text = model.image_features(pixels), model.text_features(ids)
            loss = image_text_contrastive_loss(image.float(), text.float(), model.scale(), gather_distributed=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def demo_step(precision: str, batch: int = 64) -> Callable[[], None]:
    from annofree.data.synth import SceneConfig, render_scene
    from annofree.engine.config import load_config
    from annofree.methods.groupvit import GroupViTMethod, collate, make_sample

    method = GroupViTMethod(load_config(ROOT / "configs" / "groupvit" / "demo_pretrain.yaml")).train()
    rng, sample_rng = np.random.default_rng(0), random.Random(0)
    scenes = [render_scene(rng, SceneConfig()) for _ in range(batch)]
    samples = [make_sample(method.sample_options, str(i), s.image, s.caption, sample_rng) for i, s in enumerate(scenes)]
    data = {**collate(samples), "skipped": torch.tensor(0)}
    optimizer = build_optimizer(method, OPTIM, lr=1e-3, no_weight_decay=method.no_weight_decay())

    def step() -> None:
        with autocast(precision):
            out = method(data)
            loss = sum(value for name, value in out.items() if name.startswith("loss"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def top_ops(step: Callable[[], None], rows: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"op": e.key, "self_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in events[:rows]
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    step = (bench_step if args.work == "bench" else demo_step)(args.precision)
    step()
    times = []
    for _ in range(args.steps):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    ops = top_ops(step, args.rows)
    median_ms = 1000 * statistics.median(times)
    print(f"{args.work} step, {args.precision}, {args.threads} thread(s): CPU time median {median_ms:.0f} ms")
    print(f"{'op':<62}{'share':>8}{'calls':>7}")
    for row in ops:
        print(f"{row['op'][:60]:<62}{100 * row['share']:7.1f}%{row['calls']:7d}")
    if args.json:
        figures = {"work": args.work, "precision": args.precision, "threads": args.threads, "step_cpu_ms": median_ms}
        args.json.write_text(json.dumps({**figures, "top_ops": ops}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
