"""``annofree data``: prepare data on disk.

``shards SRC OUT``: training shards (the img2dataset layout) from a folder of images with .txt captions or a
CSV / TSV / parquet caption table (:mod:`annofree.data.make_shards`).
``coco-object ROOT``: COCO-Object labels from COCO-Stuff-164k (:mod:`annofree.data.benchmarks.coco`).
"""

from __future__ import annotations

import argparse

from annofree.cli import hold_out_dir

SHARDS_DESCRIPTION = (
    "Write training shards OUT/000000.tar, 000001.tar, ... (KEY.jpg + KEY.txt + KEY.json, the img2dataset layout) "
    "from SRC: a folder of images (recursive), each captioned by the .txt file of the same name beside it, or a "
    "CSV / TSV / parquet table with a column of image paths (relative to the table's folder; local files only) and "
    "a column of captions. Images that cannot be read and missing or empty captions are skipped, counted and "
    "named (OUT/NNNNNN_stats.json). Shards are written in parallel, each complete or not at all: rerun the same "
    "command to resume. Then train with --data OUT."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="prepare data: training shards from captioned images (shards), benchmark labels (coco-object)",
        description="shards SRC OUT: training shards (the img2dataset layout) from a folder of images with .txt "
        "captions or a CSV / TSV / parquet caption table. coco-object ROOT: COCO-Object labels from COCO-Stuff-164k.",
    )
    what = parser.add_subparsers(dest="what", required=True, metavar="{shards,coco-object}")
    _add_shards(what)
    _add_coco_object(what)
    return parser


def _add_shards(what) -> None:
    from annofree.data.make_shards import CAPTION_COLUMNS, IMAGE_COLUMNS, PARQUET_EXTRA

    parser = what.add_parser(
        "shards",
        help="training shards from a folder of captioned images or a caption table",
        description=SHARDS_DESCRIPTION,
    )
    parser.add_argument(
        "src", metavar="SRC", help="a folder of images with .txt captions, or a .csv/.tsv/.parquet table"
    )
    parser.add_argument("out", metavar="OUT", help="the folder to write the shards into")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default %(default)s)")
    parser.add_argument(
        "--image-column",
        metavar="NAME",
        help=f"tables: the column of image paths (default: the first of {', '.join(IMAGE_COLUMNS)})",
    )
    parser.add_argument(
        "--caption-column",
        metavar="NAME",
        help=f"tables: the column of captions (default: the first of {', '.join(CAPTION_COLUMNS)})",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes writing shards (default: the cores, at most 8)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.epilog = f"Parquet tables need pyarrow: {PARQUET_EXTRA}."
    parser.set_defaults(_what=_run_shards)


def _add_coco_object(what) -> None:
    parser = what.add_parser(
        "coco-object",
        help="COCO-Object labels from COCO-Stuff-164k",
        description="Write annotations/SPLIT/NAME_instanceTrainIds.png (80 COCO objects + background, as GroupViT "
        "evaluates COCO-Object) next to each COCO-Stuff-164k label NAME.png under ROOT (the folder holding images/ "
        "and annotations/). Existing outputs are kept unless --force.",
    )
    parser.add_argument("root", help="the COCO-Stuff-164k root (with images/ and annotations/)")
    parser.add_argument("--split", default="val2017", help="annotations/SPLIT to convert (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite outputs that exist")
    parser.add_argument("--workers", type=int, default=4, help="threads (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(_what=_run_coco_object)


def run(args: argparse.Namespace) -> int:
    return args._what(args)


def _progress_bar(desc: str, unit: str, disable: bool):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, disable=disable)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def _run_shards(args: argparse.Namespace) -> int:
    from annofree.data.make_shards import make_shards

    hold_out_dir(args.out)  # one writer: a second run would take the first one's temporary shards away
    bar, progress = _progress_bar("shards", "sample", args.no_progress)
    with bar:
        summary = make_shards(
            args.src,
            args.out,
            samples_per_shard=args.shard_size,
            image_column=args.image_column,
            caption_column=args.caption_column,
            workers=args.workers,
            progress=progress,
        )
    kept = f" ({summary.kept} kept from an earlier run)" if summary.kept else ""
    print(f"{summary.samples} samples in {summary.shards} shards{kept}: {summary.pattern}")
    if summary.skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(summary.skipped.items()))
        print(f"skipped {sum(summary.skipped.values())} ({reasons}), all named in {summary.out}/*_stats.json; first:")
        for message in summary.skipped_samples:
            print(f"  {message}")
    for failure in summary.failed:
        print(f"annofree: error: {failure}")
    if summary.failed:
        print(f"{len(summary.failed)} shards could not be written: rerun the same command to retry them")
        return 1
    if summary.samples == 0:
        print("annofree: error: no sample could be made (see the reasons above)")
        return 1
    print(f"train on them with --data {summary.out}")
    return 0


def _run_coco_object(args: argparse.Namespace) -> int:
    from annofree.data.benchmarks.coco import convert_coco_object

    bar, progress = _progress_bar("coco-object", "label", args.no_progress)
    with bar:
        counts = convert_coco_object(args.root, args.split, force=args.force, workers=args.workers, progress=progress)
    print(
        f"wrote {counts['written']} COCO-Object label files under {args.root} (annotations/{args.split}); "
        f"kept {counts['existing']} existing; {counts['bad']} unreadable labels skipped"
    )
    return 1 if counts["bad"] else 0
