"""The DenseSiam side of ``annofree segment`` and ``annofree evaluate`` (unsupervised clusters).

``segment`` and ``evaluate`` load the weights and call these when they are a DenseSiam model, so the
GroupViT paths stay as they were. Clusters have no names: ``--classes`` is an error here (one line)
rather than silently ignored, since a user passing it expects named classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from annofree.cli.common import ImageFile, check_short_side, format_table, make_out_dir, process_images, write_json
from annofree.errors import UserError

MAX_CLUSTERS = 256  # ids 0..255 fit in the uint8 PNG


def segment_clusters(args: argparse.Namespace, model, files: list[ImageFile], errors: list[str]) -> int:
    """Write NAME.png (uint8 cluster ids) and NAME_overlay.png for every file."""
    from annofree.data.images import load_image
    from annofree.inference.clusters import DENSESIAM_SHORT_SIDE, ClusterSegmenter

    if args.classes is not None:
        raise UserError(
            "--classes: DenseSiam weights segment into unnamed clusters, not classes; leave it out "
            "(`annofree evaluate` matches clusters to a folder's classes)"
        )
    check_short_side(args, DENSESIAM_SHORT_SIDE)
    segmenter = ClusterSegmenter(model, short_side=args.short_side)
    if segmenter.num_clusters > MAX_CLUSTERS:
        raise UserError(f"{args.weights}: {segmenter.num_clusters} clusters do not fit in uint8 cluster maps")
    out_dir = make_out_dir(args.out)

    def work(path: Path, name: str) -> str:
        image = load_image(path)
        clusters = segmenter.segment(image)
        write_cluster_outputs(out_dir, name, image, clusters, segmenter.labels, args.alpha)
        return f"{path} -> {out_dir / name}.png ({image.shape[1]}x{image.shape[0]}): {_largest(clusters, segmenter)}"

    return process_images(files, errors, out_dir, work, quiet=getattr(args, "quiet", False))


def write_cluster_outputs(
    out_dir: Path, name: str, image: np.ndarray, clusters: np.ndarray, labels: list[str], alpha: float
) -> None:
    """NAME.png (cluster ids, PNG mode L) and NAME_overlay.png (colours, legend of clusters), atomically."""
    from annofree.viz import overlay
    from annofree.weights import atomic_write

    ids = Image.fromarray(clusters.astype(np.uint8))  # 2-D uint8: mode "L"
    atomic_write(out_dir / f"{name}.png", lambda tmp: ids.save(tmp, format="PNG"))
    picture = overlay(image, clusters, labels, alpha=alpha)
    atomic_write(out_dir / f"{name}_overlay.png", lambda tmp: picture.save(tmp, format="PNG"))


def _largest(clusters: np.ndarray, segmenter, top: int = 3) -> str:
    """The report line's tail: how many clusters appear, and the largest few with their shares."""
    from annofree.inference.clusters import cluster_fractions

    shares = cluster_fractions(clusters, segmenter.num_clusters)
    order = [int(i) for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
    listed = ", ".join(f"{segmenter.labels[i]} {100 * shares[i]:.1f}%" for i in order[:top])
    return f"{len(order)} clusters ({listed}{', ...' if len(order) > top else ''})"


# ----------------------------------------------------------------------------- evaluate


def evaluate_clusters(args: argparse.Namespace, model, out: Path | None) -> int:
    """Hungarian (or many-to-one) scores of the clusters: print a table, write ``--out``.

    A benchmark gets the unsupervised protocol (short side 320, centre crop 320; ``--short-side`` and ``--crop``
    override, 0 turns either off); the generic folder is read as it is unless ``--short-side`` is given.
    """
    from annofree.data.benchmarks.registry import open_dataset
    from annofree.evaluation.clusters import evaluate_cluster_dataset, read_groups
    from annofree.evaluation.reports import PredictionWriter

    if args.dataset == "imagenet":
        raise UserError("--dataset imagenet classifies with text prompts; it needs GroupViT weights")
    protocol, short_side = _unsupervised_view(args)
    dataset = open_dataset(args.dataset, args.root, args.split, skip_bad=args.skip_bad)
    groups = read_groups(args.root, [str(c) for c in dataset.classes]) if args.dataset == "folder" else None
    writer = PredictionWriter(args.save_predictions) if args.save_predictions else None
    on_result = None if writer is None else _cluster_writer(writer)
    results = evaluate_cluster_dataset(
        model, dataset, protocol=protocol, short_side=short_side, many_to_one=args.many_to_one, groups=groups,
        limit=args.limit, progress=not args.no_progress, on_result=on_result,
    )  # fmt: skip
    print(format_table(results))
    print(format_groups(results))
    if out is not None:
        settings = {"short_side": short_side, "matching": results["matching"]}
        if protocol is not None:
            settings |= {"short_side": protocol.short_side, "crop": protocol.crop}
        record = {**results, "dataset": args.dataset, "weights": str(args.weights), "data": str(args.root)}
        write_json(out, record | {"settings": settings})
        print(f"wrote {out}")
    return 0


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


__all__ = ["evaluate_clusters", "format_groups", "segment_clusters", "write_cluster_outputs"]
