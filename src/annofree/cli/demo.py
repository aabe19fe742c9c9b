"""``annofree demo [--out demo_out] [key=value ...]``: GroupViT learns to segment from captions alone.

Renders synthetic captioned scenes, scores the untrained model, trains on the captions (from scratch or from
the recipe's starting checkpoint), scores again on held-out scenes and writes OUT/groupvit/results.json, the
weights and overlays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from annofree.cli.train import _OverridesParser


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train a small GroupViT on synthetic captions and score its zero-shot segmentation",
        description=__doc__.split("\n\n")[1],
        epilog="Overrides: e.g. train.steps=200 demo.train_images=5000 (see configs/groupvit/demo.yaml).",
    )
    parser.__class__ = _OverridesParser
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    parser.add_argument("--config", type=Path, default=None, help="demo recipe (default: the packaged demo.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def run(args: argparse.Namespace) -> int:
    from annofree.demo import load_demo_config, run_groupvit_demo

    config = load_demo_config(args.config, args.overrides)
    results = run_groupvit_demo(args.out, config, progress=not args.no_progress)
    run_dir = args.out / "groupvit"
    ratio = results["miou"] / max(results["miou_random_init"], 1e-9)
    print()
    print(
        f"GroupViT zero-shot mIoU on {results['val_images']} held-out scenes: {results['miou']:.3f} "
        f"(untrained: {results['miou_random_init']:.3f}, x{ratio:.1f}); pixel accuracy "
        f"{results['pixel_accuracy']:.3f}; trained {results['train_seconds']:.0f} s on {results['train_images']} "
        "captioned images, no masks"
    )
    if results["init_weights"]:
        scratch = results["scratch_run"]
        print(f"It started from {results['init_weights']} (mIoU {results['miou_init_weights']:.3f}), which the "
              "repository's recipe trained from scratch on captions (make reproduce-demo). This demo's own run "
              f"from scratch: loss {scratch['loss_first']:.2f} -> {scratch['loss_last']:.2f} in "
              f"{scratch['train_seconds']:.0f} s, mIoU {scratch['miou']:.3f} (see docs/learning.md).")  # fmt: skip
    print(f"results: {run_dir / 'results.json'}   overlays: {run_dir}/scene_*.png")
    print(
        "Try it on your own image (it knows the shapes it saw: circle, square, triangle, star, heart, cross, "
        "ring, crescent):"
    )
    print(
        f"  annofree segment YOUR_IMAGE.jpg --weights {run_dir} --classes 'circle,star,heart' --short-side 64 "
        "--out seg_out"
    )
    return 0
