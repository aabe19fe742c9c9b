"""``annofree synth scenes|textures OUT --train N --val M --size S --seed K``: synthetic data sets.

scenes (text supervision): train split as webdataset shards ``OUT/train/NNNNNN.tar`` holding ``KEY.jpg`` +
``KEY.txt`` only (no masks reach training); val split as the segmentation folder ``OUT/val`` (images/,
labels/, classes.txt).

textures (self supervision): train split as a plain folder of unlabelled images ``OUT/train/*.jpg``; val
split as the segmentation folder ``OUT/val`` with ``things.txt``. Classes are carried by texture and shape,
colours are random per object.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from annofree.cli import hold_out_dir
from annofree.errors import UserError
from annofree.folders import LOCK_NAME

SYNTH_PARTS = ("train", "val")  # what both kinds write under OUT


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="render synthetic data sets",
        description="Synthetic data sets: annofree synth scenes|textures OUT --train N --val M --size S --seed K",
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{scenes,textures}")
    scenes = kinds.add_parser(
        "scenes",
        help="captioned shape scenes for text-supervised segmentation",
        description="Captioned shape scenes (GroupViT): OUT/train/NNNNNN.tar shards of KEY.jpg + KEY.txt (no masks "
        "reach training) and the segmentation folder OUT/val (images/, labels/, classes.txt).",
    )
    textures = kinds.add_parser(
        "textures",
        help="unlabelled texture scenes for unsupervised segmentation",
        description="Unlabelled texture scenes (DenseSiam): a folder of images OUT/train/*.jpg and the segmentation "
        "folder OUT/val with things.txt; classes are carried by texture and shape, colours are random per object.",
    )
    for kind, size in ((scenes, 64), (textures, 96)):
        kind.add_argument("out", metavar="OUT", help="output directory")
        kind.add_argument("--train", type=int, default=10000, help="number of training scenes (default 10000)")
        kind.add_argument("--val", type=int, default=500, help="number of held-out scenes with masks (default 500)")
        kind.add_argument("--size", type=int, default=size, help=f"image side in pixels (default {size})")
        kind.add_argument("--seed", type=int, default=0, help="random seed; the output depends only on it")
        kind.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
        kind.add_argument(
            "--overwrite",
            action="store_true",
            help="write into a non-empty OUT: first remove OUT/train and OUT/val (what synth writes); other files "
            "in OUT are kept. Without it a non-empty OUT is refused, as old and new data would mix",
        )
    scenes.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {args.size}")
    if args.train < 0 or args.val < 0 or args.train + args.val == 0:
        raise UserError(f"--train and --val must be >= 0 and not both 0, got {args.train} and {args.val}")
    if args.kind == "scenes" and args.per_shard < 1:
        raise UserError(f"--per-shard must be at least 1, got {args.per_shard}")
    hold_out_dir(args.out)  # ours alone from here: a second synth into OUT is refused, naming this one
    _clear_output(Path(args.out), args.overwrite)
    return _textures(args) if args.kind == "textures" else _scenes(args)


def _clear_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` (a second run would mix its data with the first's) unless ``overwrite``,
    which removes what synth writes there (``SYNTH_PARTS``) and keeps the rest."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(path.name != LOCK_NAME for path in out.iterdir()):  # our own lock aside
        return
    if not overwrite:
        raise UserError(
            f"{out}: not empty (new data would mix with what is there); give a new folder, or --overwrite to "
            f"remove {' and '.join(f'{out / part}' for part in SYNTH_PARTS)} first"
        )
    for part in SYNTH_PARTS:
        path = out / part
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _textures(args: argparse.Namespace) -> int:
    from annofree.data.synth_textures import TextureSceneConfig, write_texture_scenes

    cfg = TextureSceneConfig(size=args.size)
    summary = write_texture_scenes(args.out, args.train, args.val, cfg, args.seed, args.workers)
    if summary.train_dir:
        print(f"train: {summary.train_images} unlabelled images in {summary.train_dir}")
    if summary.val_dir:
        print(f"val:   {summary.val_images} scenes with masks in {summary.val_dir}")
    return 0


def _scenes(args: argparse.Namespace) -> int:
    from annofree.data.synth import SceneConfig, write_scenes

    summary = write_scenes(
        args.out, args.train, args.val, SceneConfig(size=args.size), args.seed, args.per_shard, args.workers
    )
    if summary.train_pattern:
        print(f"train: {summary.train_images} scenes in {summary.train_pattern}")
    if summary.val_dir:
        print(f"val:   {summary.val_images} scenes with masks in {summary.val_dir}")
    return 0
