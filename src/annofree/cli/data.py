"""``annofree data``: prepare data on disk.

``shards SRC OUT``: training shards (the img2dataset layout) from a folder of images with .txt captions or a
CSV / TSV / parquet caption table (:mod:`annofree.data.make_shards`).
``check SHARDS``: what training shards hold before a long run (:mod:`annofree.data.check`).
``coco-object ROOT``: COCO-Object labels from COCO-Stuff-164k (:mod:`annofree.data.benchmarks.coco`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from annofree.cli import hold_out_dir
from annofree.errors import UserError

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
        help="prepare data: training shards from captioned images (shards), a look at shards (check), benchmark "
        "labels (coco-object)",
        description="shards SRC OUT: training shards (the img2dataset layout) from a folder of images with .txt "
        "captions or a CSV / TSV / parquet caption table. check SHARDS: samples, corrupt samples, caption lengths "
        "and noun prompts of training shards. coco-object ROOT: COCO-Object labels from COCO-Stuff-164k.",
    )
    what = parser.add_subparsers(dest="what", required=True, metavar="{shards,check,coco-object}")
    _add_shards(what)
    _add_check(what)
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


def _add_check(what) -> None:
    parser = what.add_parser(
        "check",
        help="samples, corrupt samples, caption lengths and noun prompts of training shards",
        description="Read training shards (what --data takes: a folder, a brace pattern such as "
        "'cc3m/{00000..00331}.tar', a comma-separated list) and report, per shard and in total: usable samples, "
        "corrupt ones by reason (the first few named), caption lengths in CLIP tokens and words (min, median, p95, "
        "max), how many captions are cut at the text encoder's context, how many give at least one noun prompt for "
        "GroupViT's multi-label loss, and img2dataset's download counts where its NNNNN_stats.json files are there. "
        "Shards that cannot be read are reported and the check goes on. Exit status 1 when a shard could not be "
        "read to its end or no sample is usable.",
    )
    parser.add_argument("shards", metavar="SHARDS", help="the shards, as --data takes them")
    parser.add_argument("--max-shards", type=int, metavar="N", help="check N shards spread over the list (a sample)")
    parser.add_argument(
        "--config", metavar="CONFIG", help="a GroupViT training config: its text context length and data.stop_nouns"
    )
    parser.add_argument(
        "--context-length", type=int, metavar="N", help="text context in tokens, start and end included (default 77)"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the report (per shard and total) to this JSON file")
    parser.add_argument("--workers", type=int, default=1, help="processes checking shards (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(_what=_run_check)


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


def _check_settings(args: argparse.Namespace) -> tuple[int, tuple[str, ...]]:
    """(context length, stop nouns) from --config and --context-length."""
    from annofree.data.tokenizer import CONTEXT_LENGTH

    context_length, stop_nouns = CONTEXT_LENGTH, ()
    if args.config:
        from annofree.engine.config import load_config
        from annofree.methods.groupvit import GroupViTMethod

        config = load_config(args.config)
        if config.get("method") != "groupvit":
            raise UserError(f"{args.config}: --config takes a GroupViT training config (method: groupvit)")
        sections = GroupViTMethod.check_config(config)
        context_length, stop_nouns = sections.model.text.context_length, sections.data.stop_nouns or ()
    return args.context_length or context_length, stop_nouns


def _run_check(args: argparse.Namespace) -> int:
    from annofree.data.check import check_shards

    context_length, stop_nouns = _check_settings(args)
    bar, progress = _progress_bar("check", "shard", args.no_progress)
    with bar:
        report = check_shards(args.shards, context_length, stop_nouns, args.max_shards, args.workers, progress)
    for check in report.shards:
        print(f"{check.shard}: {_describe(check.summary(), check.error, context_length)}")
    total = report.total
    checked = f"{total['shards_checked']} of {total['shards_listed']} shards"
    print(f"total, {checked}: {_describe(total, None, context_length)}")
    for name in total["corrupt_samples"]:
        print(f"  {name}")
    if args.json:
        import json

        from annofree.io import atomic_write

        text = json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n"
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {args.json}")
    for unreadable in total["unreadable"]:
        print(f"annofree: error: {unreadable}")
    if total["samples"] == 0:
        print("annofree: error: no usable sample")
    return 1 if total["unreadable"] or total["samples"] == 0 else 0


def _describe(figures: dict, error: str | None, context_length: int) -> str:
    """One line: samples, corrupt ones, caption lengths, cut captions, noun prompts, downloads, damage."""
    parts = [f"{figures['samples']} samples"]
    if figures["corrupt"]:
        reasons = ", ".join(f"{count} {reason}" for reason, count in figures["corrupt_by_reason"].items())
        parts.append(f"{figures['corrupt']} corrupt ({reasons})")
    tokens, words = figures["tokens"], figures["words"]
    if tokens is not None:
        parts.append("tokens {min}/{median}/{p95}/{max}".format(**tokens) + " (min/median/p95/max)")
        parts.append("words {min}/{median}/{p95}/{max}".format(**words))
        parts.append(f"{figures['cut']} cut at {context_length} tokens")
        parts.append(f"{figures['with_noun_prompt_fraction']:.1%} with a noun prompt")
    if "img2dataset" in figures:
        downloads = figures["img2dataset"]
        parts.append(f"img2dataset downloaded {downloads['downloaded']} of {downloads['tried']}")
    if error is not None:
        parts.append(f"UNREADABLE: {error}")
    return "; ".join(parts)


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
