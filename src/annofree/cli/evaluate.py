"""``annofree evaluate``: scores of GroupViT or DenseSiam weights on a benchmark or a segmentation folder.

The weights decide what is measured:

- GroupViT, zero-shot segmentation with the benchmark's published protocol (``annofree.evaluation.protocols``:
  sliding windows, background threshold, the reference's prompt names); data sets with a background class
  are scored with and without it (VOC21/VOC20, Context60/59) from one pass;
- GroupViT on ``--dataset imagenet``: zero-shot classification (top-1, top-5) with a template ensemble;
- DenseSiam, unsupervised segmentation: clusters matched to classes (Hungarian, or ``--many-to-one``),
  things/stuff by true class, short side 320 + centre crop 320 on the benchmarks.

``--onnx DIR`` instead of ``--weights``: a GroupViT exported by ``annofree export onnx``, scored the same way
with onnxruntime. ``--data FOLDER`` is the generic segmentation folder (images/, labels/, classes.txt, optional
things.txt), the same as ``--dataset folder --root FOLDER``. Results print as a table; ``--out result.json``
also writes ``result.md`` beside it; ``--save-predictions DIR`` writes each image's label PNG and overlay.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from annofree.cli import hold_out_dir
from annofree.cli.common import (
    COMMAND_LINE,
    add_image_pipeline_options,
    add_inference_options,
    check_weights_or_onnx,
    format_table,
    load_segmentation_model,
    segmenter_options,
    write_json,
    zero_shot_settings,
)
from annofree.errors import UserError
from annofree.inference.settings import SYNTHETIC_NOTE

CLASSIFICATION = "imagenet"
TEMPLATE_COUNTS = {"7": "subset", "80": "full"}  # --templates -> template set


def add_parser(subparsers) -> argparse.ArgumentParser:
    from annofree.data.benchmarks.registry import DATASETS

    parser = subparsers.add_parser(
        "evaluate",
        help="scores of GroupViT (zero-shot) or DenseSiam (matched clusters) weights on a benchmark or folder",
        description="Segment every image of a benchmark (--dataset NAME --root DIR) or a segmentation folder "
        "(--data DIR: images/, labels/, classes.txt) and report mIoU, pixel accuracy and per-class IoU, with the "
        "benchmark's published protocol (--data: the settings stored with the weights, else the defaults); options "
        "given on the command line override them, one by one. "
        f"--dataset {CLASSIFICATION}: zero-shot classification of an ImageNet-style folder (top-1, top-5).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a segmentation folder with images/, labels/ and classes.txt")
    source.add_argument("--dataset", choices=[*DATASETS, CLASSIFICATION], help="a benchmark, read from --root")
    parser.add_argument("--root", help="where the benchmark lies (e.g. the folder holding VOCdevkit)")
    parser.add_argument("--split", default=None, help="the benchmark's split (default: its validation split)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file (and Markdown beside it)")
    parser.add_argument("--save-predictions", metavar="DIR", default=None, help="write label PNGs and overlays")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable samples (counted) instead of stopping")
    add_inference_options(parser, onnx=True, protocol=True)
    add_image_pipeline_options(parser, protocol=True)
    parser.set_defaults(prompts=None)  # the protocol's template set
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--many-to-one",
        action="store_true",
        help="DenseSiam only: match each cluster to its majority class (needed when clusters outnumber classes)",
    )
    parser.add_argument("--crop", type=int, default=None, help="DenseSiam on a benchmark: centre crop (default 320)")
    parser.add_argument(
        "--linear-probe",
        metavar="TRAIN_FOLDER",
        default=None,
        help="DenseSiam on --data: also train a 1x1 classifier on the frozen features of this labelled folder "
        "and score it on --data (results: linear_probe)",
    )
    parser.add_argument(
        "--templates",
        choices=list(TEMPLATE_COUNTS),
        default=None,
        help="imagenet: the prompt ensemble (default: the official protocol's, 7)",
    )
    parser.add_argument("--class-names", default=None, help="imagenet: class names, one a line (line i = id i)")
    parser.add_argument("--val-list", default=None, help="imagenet: lines 'relative/path CLASS_ID' under --root")
    return parser


def _check_args(args: argparse.Namespace) -> Path | None:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    if args.dataset is not None and not args.root:
        raise UserError(f"--dataset {args.dataset} needs --root (where the data set lies)")
    if args.data is not None:
        args.dataset, args.root = "folder", args.data
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a directory (give a file name such as result.json)")
    if args.save_predictions:
        hold_out_dir(args.save_predictions, "--save-predictions")
    return out


def run(args: argparse.Namespace) -> int:
    from annofree.inference.segmenters import segmenter_kind

    check_weights_or_onnx(args)
    out = _check_args(args)
    model = load_segmentation_model(args)
    if not segmenter_kind(model).named_classes:
        from annofree.cli.clusters import evaluate_clusters

        return evaluate_clusters(args, model, out)
    if args.many_to_one:
        raise UserError("--many-to-one matches DenseSiam clusters to classes; GroupViT weights predict the classes")
    if args.linear_probe:
        raise UserError("--linear-probe trains on DenseSiam's dense features; GroupViT weights predict the classes")
    if args.dataset == CLASSIFICATION:
        return _classify(args, model, out)
    return _evaluate_zero_shot(args, model, out)


def zero_shot_protocol_for(args: argparse.Namespace, model=None):
    """The protocol to score with and the lines that say which settings apply.

    The generic folder takes each option given on the command line, else the weights' stored settings, else the
    defaults (as ``annofree segment``); a benchmark keeps its published protocol with the options given on top,
    and a note says so when the weights' stored settings differ.
    """
    from annofree.evaluation.protocols import PROMPT_TEMPLATE_SETS, zero_shot_protocol
    from annofree.inference.settings import describe_settings, differences, resolve_settings

    base = zero_shot_protocol(args.dataset)
    if args.dataset == "folder":
        settings, notes = zero_shot_settings(args, model, base.settings, "the folder protocol")
        return replace(base, settings=settings, templates=PROMPT_TEMPLATE_SETS[settings.prompts]), notes
    given = segmenter_options(args)
    settings, sources = resolve_settings(
        None, given, given_source=COMMAND_LINE, base=base.settings, base_source=f"the {args.dataset} protocol"
    )
    notes = [describe_settings(settings, sources)]
    stored = getattr(model, "inference_settings", None)
    ignored = {k: v for k, v in differences(settings, stored).items() if k not in given}
    if ignored:
        shown = " ".join(f"{k}={v}" for k, v in ignored.items())
        notes.append(f"note: {stored.path} says {shown}; {args.dataset} is scored with its published protocol "
                     "(give those options to use them)")  # fmt: skip
    if stored is not None and stored.synthetic:
        notes.append(f"note: {SYNTHETIC_NOTE}")
    templates = PROMPT_TEMPLATE_SETS[settings.prompts] if "prompts" in given else base.templates
    return replace(base, settings=settings, templates=templates), notes


def _evaluate_zero_shot(args: argparse.Namespace, model, out: Path | None) -> int:
    from annofree.data.benchmarks.registry import open_dataset
    from annofree.evaluation.folder import evaluate_dataset
    from annofree.evaluation.reports import PredictionWriter

    protocol, notes = zero_shot_protocol_for(args, model)
    dataset = open_dataset(args.dataset, args.root, args.split, skip_bad=args.skip_bad)
    for line in notes:
        print(line, file=sys.stderr)
    writer = PredictionWriter(args.save_predictions) if args.save_predictions else None
    progress = not args.no_progress
    results = evaluate_dataset(model, dataset, protocol, limit=args.limit, progress=progress, on_result=writer)
    print(format_table(results))
    if writer is not None:
        print(f"wrote {writer.count} predictions to {writer.directory}")
    if out is not None:
        settings = protocol.segmenter_options() | {
            "templates": protocol.templates,
            "prompt_names": dict(protocol.prompt_names),
        }
        record = {**results, "dataset": args.dataset, "weights": str(args.weights or args.onnx), "data": str(args.root)}
        write_json(out, record | {"settings": settings})
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def _classify(args: argparse.Namespace, model, out: Path | None) -> int:
    from annofree.data.captions import TEMPLATE_SETS
    from annofree.evaluation.classification import classify_zero_shot, open_classification_set
    from annofree.evaluation.protocols import CLASSIFICATION_PROTOCOL

    data = open_classification_set(args.root, args.class_names, args.val_list)
    templates = TEMPLATE_SETS[TEMPLATE_COUNTS.get(args.templates, CLASSIFICATION_PROTOCOL.templates)]
    result = classify_zero_shot(model, data, templates, progress=not args.no_progress)
    print(
        f"top-1 {100 * result['top1']:.2f} %, top-5 {100 * result['top5']:.2f} % "
        f"({result['num_images']} images, {result['num_classes']} classes, {result['templates']} templates)"
    )
    if result["skipped"]:
        print(f"({len(result['skipped'])} unreadable images skipped)")
    if out is not None:
        from annofree.io import atomic_write

        record = {
            **result,
            "dataset": CLASSIFICATION,
            "weights": str(args.weights or args.onnx),
            "data": str(args.root),
        }
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {out}")
    return 0
