"""``annofree demo [--out demo_out] [--method all|groupvit|densesiam] [--config FILE] [key=value ...]``.

Segmentation without pixel labels, learned on this machine: GroupViT learns zero-shot segmentation from
captions alone, DenseSiam learns unsupervised segmentation from unlabelled images. Each renders its
synthetic scenes, scores a baseline, trains, scores held-out scenes and writes OUT/METHOD/results.json,
the weights and overlays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from annofree.cli import hold_out_dir
from annofree.cli.train import _OverridesParser
from annofree.errors import UserError
from annofree.inference.settings import SETTINGS_NAME

SHAPES = "circle, square, triangle, star, heart, cross, ring, crescent"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train GroupViT on synthetic captions and DenseSiam on unlabelled scenes, and score both",
        description=__doc__.split("\n\n")[1],
        epilog="Overrides go to one demo: groupvit.train.steps=200 densesiam.demo.train_images=2000 (a bare "
        "key=value when a single demo runs). Recipes: configs/groupvit/demo.yaml, configs/densesiam/demo.yaml.",
    )
    parser.__class__ = _OverridesParser
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    parser.add_argument(
        "--method", choices=("all", "groupvit", "densesiam"), default=None, help="which demo (default: both)"
    )
    parser.add_argument("--config", type=Path, default=None, help="a demo recipe; runs that recipe's method only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def selected_methods(args: argparse.Namespace) -> list[str]:
    """The demos to run: --method, else the --config recipe's method, else both."""
    from annofree.demo import METHODS
    from annofree.engine.config import load_config

    if args.config is None:
        return list(METHODS) if args.method in (None, "all") else [args.method]
    method = load_config(args.config, defaults=None).get("method")
    if method not in METHODS:
        raise UserError(f"{args.config}: 'method: {method}' has no demo ({', '.join(METHODS)})")
    if args.method not in (None, method):
        raise UserError(f"--config {args.config} is a {method} recipe, but --method {args.method} was asked")
    return [method]


def run(args: argparse.Namespace) -> int:
    from annofree.demo import load_demo_config, route_overrides, run_densesiam_demo, run_groupvit_demo

    methods = selected_methods(args)
    routed = route_overrides(args.overrides, methods)
    configs = {m: load_demo_config(args.config, routed[m], method=m) for m in methods}  # all checked before any runs
    hold_out_dir(args.out)
    progress = not args.no_progress
    for method in methods:
        if method == "groupvit":
            print_groupvit(args.out / "groupvit", run_groupvit_demo(args.out, configs[method], progress=progress))
        else:
            print_densesiam(args.out / "densesiam", run_densesiam_demo(args.out, configs[method], progress=progress))
    from annofree.demo.index import write_index

    print(f"\nAll results, curves and overlays on one page: {write_index(args.out)}")
    return 0


def print_groupvit(run_dir: Path, results: dict) -> None:
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
    print(f"Try it on your own image (it knows the shapes it saw: {SHAPES}; the settings it was scored with are "
          f"in {run_dir / SETTINGS_NAME}, which segment reads):")  # fmt: skip
    print(f"  annofree segment YOUR_IMAGE.jpg --weights {run_dir} --classes 'circle,star,heart' --out seg_out")


def print_densesiam(run_dir: Path, results: dict) -> None:
    print()
    print(
        f"DenseSiam unsupervised mIoU on {results['val_images']} held-out scenes (clusters Hungarian-matched to "
        f"classes): {results['miou']:.3f}; k-means on pixel colours {results['miou_kmeans_pixels']:.3f}, on the "
        f"untrained network's features {results['miou_random_init']:.3f}; pixel accuracy "
        f"{results['pixel_accuracy']:.3f}; trained {results['train_seconds']:.0f} s on {results['train_images']} "
        "unlabelled images"
    )
    side = f" --short-side {results['eval_short_side']}" if results.get("eval_short_side") else ""
    print(f"results: {run_dir / 'results.json'}   overlays: {run_dir}/scene_*.png")
    print("Segment your own images into its clusters, or score it on a labelled folder:")
    print(f"  annofree segment YOUR_IMAGE.jpg --weights {run_dir}{side} --out seg_out")
    print(f"  annofree evaluate --weights {run_dir} --data {run_dir.parent / 'data_textures' / 'val'}{side}")
