"""The cluster side of ``annofree evaluate``: scores of weights whose labels are unnamed clusters (DenseSiam).

``evaluate`` loads the weights and calls :func:`evaluate_clusters` when their segmenter names no classes
(:func:`annofree.inference.segmenters.segmenter_kind`); ``annofree segment`` needs nothing of its own for them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from annofree.cli.common import format_table, write_json
from annofree.errors import UserError

# ----------------------------------------------------------------------------- evaluate


def evaluate_clusters(args: argparse.Namespace, model, out: Path | None) -> int:
    """Hungarian (or many-to-one) scores of the clusters: print a table, write ``--out``.

    A benchmark gets the unsupervised protocol (short side 320, centre crop 320; ``--short-side`` and ``--crop``
    override, 0 turns either off); the generic folder is read as it is unless ``--short-side`` is given.
    """
    from annofree.data.benchmarks.registry import open_dataset
    from annofree.evaluation.clusters import evaluate_cluster_dataset, read_groups
    from annofree.evaluation.linear_probe import linear_probe_folders, model_features
    from annofree.evaluation.reports import PredictionWriter

    if args.dataset == "imagenet":
        raise UserError("--dataset imagenet classifies with text prompts; it needs GroupViT weights")
    if args.linear_probe:  # checked before the clusters' pass, which may be long
        _check_linear_probe(args, model)
    protocol, short_side = _unsupervised_view(args)
    dataset = open_dataset(args.dataset, args.root, args.split, skip_bad=args.skip_bad)
    groups = read_groups(args.root, [str(c) for c in dataset.classes]) if args.dataset == "folder" else None
    writer = PredictionWriter(args.save_predictions) if args.save_predictions else None
    on_result = None if writer is None else _cluster_writer(writer)
    results = evaluate_cluster_dataset(
        model, dataset, protocol=protocol, short_side=short_side, many_to_one=args.many_to_one, groups=groups,
        limit=args.limit, progress=not args.no_progress, on_result=on_result,
    )  # fmt: skip
    if args.linear_probe:
        results["linear_probe"] = linear_probe_folders(model_features(model, short_side), args.linear_probe, args.root)
    print(format_table(results))
    print(format_groups(results))
    if "linear_probe" in results:
        print(f"linear probe (trained on {args.linear_probe}): mIoU {_percent(results['linear_probe']['miou'])} %")
    if out is not None:
        settings = {"short_side": short_side, "matching": results["matching"]}
        if protocol is not None:
            settings |= {"short_side": protocol.short_side, "crop": protocol.crop}
        record = {**results, "dataset": args.dataset, "weights": str(args.weights), "data": str(args.root)}
        write_json(out, record | {"settings": settings})
        print(f"wrote {out}")
    return 0


def _check_linear_probe(args: argparse.Namespace, model) -> None:
    if args.dataset != "folder":
        raise UserError("--linear-probe scores on a segmentation folder: give it with --data FOLDER")
    if not hasattr(model, "dense_features"):
        raise UserError("--linear-probe needs the model's dense features: give --weights (not an ONNX file)")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _cluster_writer(writer):
    """``on_result`` hook writing each cluster map (ids as they are; the mapping is in the results)."""

    def write(name: str, image: np.ndarray, label: np.ndarray, clusters: np.ndarray) -> None:
        writer.write(name, image, clusters, [f"cluster {i}" for i in range(int(clusters.max()) + 1)])

    return write


def _unsupervised_view(args: argparse.Namespace):
    """(protocol or None, short side for the segmenter): the folder keeps its size, benchmarks get 320 + crop."""
    from annofree.evaluation.protocols import UNSUPERVISED_PROTOCOL, UnsupervisedProtocol

    for option in ("short_side", "crop"):
        value = getattr(args, option, None)
        if value is not None and value < 0:
            raise UserError(f"--{option.replace('_', '-')} must be 0 (off) or positive, got {value}")
    if args.dataset == "folder":
        if args.crop:
            raise UserError("--crop applies to the benchmarks' protocol; on a folder use --short-side only")
        return None, args.short_side or None
    short = UNSUPERVISED_PROTOCOL.short_side if args.short_side is None else args.short_side
    crop = UNSUPERVISED_PROTOCOL.crop if args.crop is None else (args.crop or None)
    if not short:
        return None, None  # keep the size (no crop either: the crop belongs to the resized view)
    return UnsupervisedProtocol(short_side=short, crop=crop), None


def format_groups(results: dict[str, Any]) -> str:
    """Things/stuff lines (when the folder marks them) and the matching used."""

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    lines = [
        f"{name} mIoU {percent(g['miou'])} %, pixel accuracy {percent(g['pixel_accuracy'])} %"
        for name, g in results["groups"].items()
    ]
    lines.append(f"({results['num_clusters']} clusters, {results['matching']} matching)")
    return "\n".join(lines)


__all__ = ["evaluate_clusters", "format_groups"]
