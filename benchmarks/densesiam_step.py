"""Cost of one DenseSiam training step beside a plain SimSiam step with the same backbone (issue 20: <= 1.15x).

Both sides use ``configs/densesiam/coco_pretrain.yaml`` (ResNet-50, SimSiam's global projector and predictor)
on the same batch of random images and the same two views (made once per step by the method's kornia
pipeline, timed on both sides), and do forward, backward and one SGD step:

- DenseSiam: every branch on: global SimSiam + PixSim at the 7 x 7 overlap grid + RegionSim;
- SimSiam: the global branch alone (backbone -> projector -> predictor, symmetric negative cosine).

The two alternate step by step (order swapped every round), so that load from other processes falls on both
alike; warm-up steps are excluded. Prints seconds per step of each and their ratio; ``--flops`` also counts the
floating-point operations of one step of each (forward and backward, ``torch.utils.flop_counter``): a figure that
load from other processes cannot change, and the floor of the time ratio when both sides run their matrix
products equally fast. ``--json OUT`` writes the figures.

Usage::

    .venv/bin/python benchmarks/densesiam_step.py [--batch 8] [--size 224] [--steps 4] [--warmup 1] [--threads 2]
        [--flops] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from annofree.engine.config import load_config
from annofree.losses.siamese import symmetric_similarity_loss
from annofree.methods.densesiam import DenseSiamMethod

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "densesiam" / "coco_pretrain.yaml"


def build(size: int) -> DenseSiamMethod:
    overrides = [f"data.view1.size={size}", f"data.image_size={size}", "loss.region_start=0"]
    method = DenseSiamMethod(load_config(CONFIG, overrides))
    method.region_on = True  # every branch on, as the issue asks
    return method.train()


def densesiam_loss(method: DenseSiamMethod, views) -> torch.Tensor:
    out = method.pretrain_losses(*views)
    return sum(value for key, value in out.items() if key.startswith("loss_"))


def simsiam_loss(method: DenseSiamMethod, views) -> torch.Tensor:
    model = method.model
    res5 = [model.backbone.forward_features(model.normalize_pixels(v.images))["res5"] for v in views]
    (z1, p1), (z2, p2) = (model.global_embedding(r) for r in res5)
    return symmetric_similarity_loss(p1, z1, p2, z2, "cosine", dim=1)


def timed_step(method, optimizer, images, seed, loss_fn) -> float:
    began = time.perf_counter()
    views = method.make_views(images, seed)
    loss = loss_fn(method, views)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - began


def step_flops(method, images, loss_fn) -> int:
    """Floating-point operations of one step's forward and backward (the optimiser step is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    views = method.make_views(images, 0)
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(method, views).backward()
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flops", action="store_true", help="also count the operations of one step of each")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    sides = {"densesiam": densesiam_loss, "simsiam": simsiam_loss}
    runs = {}
    for name in sides:
        method = build(args.size)
        runs[name] = (method, torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4))
    times: dict[str, list[float]] = {name: [] for name in sides}
    for step in range(args.warmup + args.steps):
        order = list(sides) if step % 2 == 0 else list(reversed(sides))
        for name in order:
            seconds = timed_step(*runs[name], images, step, sides[name])
            if step >= args.warmup:
                times[name].append(seconds)
    per_step = {name: statistics.median(values) for name, values in times.items()}
    print(f"ResNet-50, batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, fp32, "
          f"median of {args.steps} steps")  # fmt: skip
    for name, seconds in per_step.items():
        print(f"  {name:10s} {seconds:7.3f} s/step")
    ratio = per_step["densesiam"] / per_step["simsiam"]
    print(f"DenseSiam / SimSiam step time: {ratio:.3f} (target <= 1.15)")
    figures = {"batch": args.batch, "size": args.size, "threads": args.threads, "steps": args.steps,
               "densesiam_s": per_step["densesiam"], "simsiam_s": per_step["simsiam"], "ratio": ratio}  # fmt: skip
    if args.flops:
        flops = {name: step_flops(runs[name][0], images, sides[name]) for name in sides}
        figures.update({f"{name}_gflop": flops[name] / 1e9 for name in sides})
        figures["flop_ratio"] = flops["densesiam"] / flops["simsiam"]
        print(f"  operations per step: DenseSiam {flops['densesiam'] / 1e9:.1f} GFLOP, SimSiam "
              f"{flops['simsiam'] / 1e9:.1f} GFLOP, ratio {figures['flop_ratio']:.3f}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
