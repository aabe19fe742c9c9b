"""``annofree data``: prepare benchmark data on disk (``coco-object``: COCO-Object labels from COCO-Stuff-164k)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="prepare benchmark data (coco-object: COCO-Object labels from COCO-Stuff-164k)",
        description="coco-object ROOT: write annotations/SPLIT/NAME_instanceTrainIds.png (80 COCO objects + "
        "background, as GroupViT evaluates COCO-Object) next to each COCO-Stuff-164k label NAME.png under ROOT "
        "(the folder holding images/ and annotations/). Existing outputs are kept unless --force.",
    )
    parser.add_argument("what", choices=["coco-object"], help="what to prepare")
    parser.add_argument("root", help="the COCO-Stuff-164k root (with images/ and annotations/)")
    parser.add_argument("--split", default="val2017", help="annotations/SPLIT to convert (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite outputs that exist")
    parser.add_argument("--workers", type=int, default=4, help="threads (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from annofree.data.benchmarks.coco import convert_coco_object

    with tqdm(desc="coco-object", unit="label", disable=args.no_progress) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        counts = convert_coco_object(args.root, args.split, force=args.force, workers=args.workers, progress=progress)
    print(
        f"wrote {counts['written']} COCO-Object label files under {args.root} (annotations/{args.split}); "
        f"kept {counts['existing']} existing; {counts['bad']} unreadable labels skipped"
    )
    return 1 if counts["bad"] else 0
