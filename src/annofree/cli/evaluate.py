"""``annofree evaluate``: mIoU of GroupViT or DenseSiam weights on a segmentation folder (the weights decide).

The folder holds images/NAME.{jpg,png}, labels/NAME.png (class ids, 255 = ignore) and classes.txt.

GroupViT (zero-shot): when class 0 is named "background" it is predicted by the threshold; every other
class is a text query. DenseSiam (unsupervised, :mod:`annofree.cli.clusters`): clusters are matched to the
classes by the Hungarian algorithm (``--many-to-one``: each cluster to its majority class); an optional
things.txt in the folder lists the thing classes for things/stuff averages.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from annofree.cli.segment import (
    add_inference_options,
    check_groupvit,
    is_densesiam,
    load_model,
    resolve_device,
    segmenter_options,
)
from annofree.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="mIoU of GroupViT (zero-shot) or DenseSiam (matched clusters) weights on a segmentation folder",
        description="Segment every image of a folder (images/, labels/, classes.txt) and report mIoU, pixel "
        "accuracy and per-class IoU. DenseSiam clusters are matched to the classes (Hungarian, or "
        "--many-to-one); things.txt in the folder (thing class names) adds things/stuff averages.",
    )
    parser.add_argument("--data", required=True, help="segmentation folder with images/, labels/ and classes.txt")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    add_inference_options(parser)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--many-to-one",
        action="store_true",
        help="DenseSiam only: match each cluster to its majority class (needed when clusters outnumber classes)",
    )
    return parser


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def format_table(results: dict[str, Any]) -> str:
    """A short text table: per-class IoU, then mIoU and accuracies (in percent)."""
    width = max([len("pixel accuracy"), *(len(name) for name in results["per_class_iou"])])
    lines = [f"{'class':<{width}}  IoU %"]
    lines += [f"{name:<{width}}  {_percent(iou)}" for name, iou in results["per_class_iou"].items()]
    lines.append("-" * (width + 8))
    lines.append(f"{'mIoU':<{width}}  {_percent(results['miou'])}")
    lines.append(f"{'pixel accuracy':<{width}}  {_percent(results['pixel_accuracy'])}")
    lines.append(f"{'mean accuracy':<{width}}  {_percent(results['mean_accuracy'])}")
    lines.append(f"({results['num_images']} images, {results['num_pixels']} labelled pixels)")
    return "\n".join(lines)


def write_json(out: Path, record: dict[str, Any]) -> None:
    from annofree.weights import atomic_write

    text = json.dumps(record, indent=2) + "\n"
    try:
        atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a directory (give a file name such as result.json)")
    model = load_model(args.weights, resolve_device(args.device))
    if is_densesiam(model):
        from annofree.cli.clusters import evaluate_clusters

        return evaluate_clusters(args, model, out)
    if args.many_to_one:
        raise UserError("--many-to-one matches DenseSiam clusters to classes; GroupViT weights predict the classes")
    return _evaluate_zero_shot(args, check_groupvit(model, args.weights), out)


def _evaluate_zero_shot(args: argparse.Namespace, model, out: Path | None) -> int:
    from annofree.evaluation.folder import evaluate_folder

    options = segmenter_options(args)
    results = evaluate_folder(model, args.data, limit=args.limit, progress=not args.no_progress, **options)
    print(format_table(results))
    if out is not None:
        record = {
            **results,
            "weights": str(args.weights),
            "data": str(args.data),
            "settings": {k: v for k, v in options.items() if k != "template"} | {"prompts": args.prompts},
        }
        write_json(out, record)
        print(f"wrote {out}")
    return 0
