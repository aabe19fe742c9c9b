"""Unsupervised segmentation scores of a DenseSiam on a segmentation folder (images/, labels/, classes.txt).

Every image is segmented into clusters, a class-by-cluster confusion matrix is accumulated (label 255
ignored), clusters are matched to classes (:mod:`annofree.evaluation.hungarian`: one-to-one Hungarian, or
many-to-one majority when asked) and the matched maps are scored: pixel accuracy, mIoU, per-class IoU.

Things and stuff: the folder format has no marking of its own, so an optional ``things.txt`` beside
``classes.txt`` lists the thing class names (one a line, each also in classes.txt); every other class is
stuff. With it the results hold ``groups`` ``{"things": {...}, "stuff": {...}}``, averaged over the TRUE
classes of each group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from annofree.errors import UserError
from annofree.evaluation.folder import Sample, _same_size_batches, first_samples, with_skipped
from annofree.evaluation.hungarian import evaluate_clusters
from annofree.evaluation.metrics import ConfusionMatrix
from annofree.evaluation.protocols import UnsupervisedProtocol

THINGS_FILE = "things.txt"
PredictBatch = Callable[[list[np.ndarray]], Sequence[np.ndarray]]  # same-size uint8 images -> cluster maps


def read_groups(root: str | Path, classes: Sequence[str]) -> dict[str, list[int]]:
    """``{"things": ids, "stuff": ids}`` from ``root/things.txt``, or ``{}`` when the folder has none."""
    path = Path(root) / THINGS_FILE
    if not path.is_file():
        return {}
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    names = [name for name in names if name]
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise UserError(f"{path}: {unknown[0]!r} is not a class of classes.txt (things.txt lists thing class names)")
    if not names:
        raise UserError(f"{path}: no class names (list the thing classes, one a line, or remove the file)")
    things = sorted({classes.index(name) for name in names})
    return {"things": things, "stuff": [i for i in range(len(classes)) if i not in things]}


def matching_method(num_clusters: int, num_classes: int, many_to_one: bool) -> str:
    """``"majority"`` when asked, else ``"hungarian"``; an error when one-to-one cannot cover the clusters."""
    if many_to_one:
        return "majority"
    if num_clusters > num_classes:
        raise UserError(
            f"the model has {num_clusters} clusters but the data {num_classes} classes: one-to-one matching "
            "cannot place them all (use many-to-one matching, --many-to-one)"
        )
    return "hungarian"


def evaluate_cluster_samples(
    predict: PredictBatch,
    samples: Iterable[Sample],
    class_names: Sequence[str],
    num_clusters: int,
    *,
    many_to_one: bool = False,
    groups: dict[str, list[int]] | None = None,
    total: int | None = None,
    progress: bool = True,
    batch_size: int = 16,
    on_result: Callable[[str, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Score any cluster predictor (a model, k-means on pixels...) on ``(name, image, label)`` samples.

    ``predict`` maps a list of same-size uint8 images to int cluster maps of their size, ids
    ``0..num_clusters - 1``; ``on_result(name, image, label, clusters)`` sees each map. Returns
    :meth:`ClusterScores.summary` plus ``num_images``, ``num_pixels``, ``num_clusters`` and ``matching``.
    """
    method = matching_method(num_clusters, len(class_names), many_to_one)
    # Square, so that the streaming matrix takes both ids; cut to [classes, clusters] below.
    matrix = ConfusionMatrix(max(len(class_names), num_clusters), ignore_index=255)
    count = 0
    with tqdm(total=total, desc="evaluate", unit="img", disable=not progress) as bar:
        for batch in _same_size_batches(samples, batch_size):
            for (name, image, label), clusters in zip(batch, predict([image for _, image, _ in batch]), strict=True):
                if on_result is not None:
                    on_result(name, image, label, np.asarray(clusters))
                try:
                    if np.asarray(clusters).size and int(np.max(clusters)) >= num_clusters:
                        # The square matrix would take it, then lose it when cut to num_clusters columns.
                        raise ValueError(f"cluster id {int(np.max(clusters))} outside 0..{num_clusters - 1}")
                    matrix.update(clusters, label)
                except ValueError as exc:
                    raise UserError(f"{name}: {exc}") from None
            count += len(batch)
            bar.update(len(batch))
    counts = matrix.matrix[: len(class_names), :num_clusters]
    scores = evaluate_clusters(counts, method=method, groups=groups)
    return {
        **scores.summary(class_names),
        "num_images": count,
        "num_pixels": int(counts.sum()),
        "num_clusters": num_clusters,
        "matching": "many-to-one" if method == "majority" else "hungarian",
    }


def evaluate_cluster_folder(
    model: nn.Module,
    root: str | Path,
    *,
    short_side: int | None = None,
    many_to_one: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Hungarian-matched (or many-to-one) scores of a DenseSiam's clusters on a segmentation folder.

    Returns ``{"miou", "pixel_accuracy", "mean_accuracy", "per_class_iou", "per_class_accuracy",
    "groups", "mapping" (cluster -> class id), "num_images", "num_pixels", "num_clusters", "matching"}``;
    ``groups`` is empty without ``things.txt`` (module docstring). ``limit`` scores only the first images.
    """
    from annofree.data.folder import SegmentationFolder

    dataset = SegmentationFolder(root)
    groups = read_groups(root, [str(c) for c in dataset.classes])
    try:
        return evaluate_cluster_dataset(
            model,
            dataset,
            short_side=short_side,
            many_to_one=many_to_one,
            groups=groups,
            limit=limit,
            progress=progress,
        )
    except UserError as exc:
        raise UserError(f"{root}: {exc}") from None


def evaluate_cluster_dataset(
    model: nn.Module,
    dataset: Any,
    *,
    protocol: UnsupervisedProtocol | None = None,
    short_side: int | None = None,
    many_to_one: bool = False,
    groups: dict[str, list[int]] | None = None,
    limit: int | None = None,
    progress: bool = True,
    on_result: Callable[[str, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Cluster scores on any data set (``classes``, ``len``, ``[i] -> (name, image, label)``).

    ``protocol`` (e.g. short side 320 + centre crop 320) is applied to each image and label first.
    Things/stuff come from ``groups`` or, when not given, from the data set's ``things`` (class names).
    """
    from annofree.inference.clusters import ClusterSegmenter

    classes = [str(c) for c in dataset.classes]
    if groups is None:
        groups = groups_from_things(classes, getattr(dataset, "things", None))
    segmenter = ClusterSegmenter(model, short_side=short_side)
    samples, count = first_samples(dataset, limit)
    if protocol is not None:
        samples = ((name, *protocol.apply(image, label)) for name, image, label in samples)
    results = evaluate_cluster_samples(
        segmenter.cluster_maps,
        samples,
        classes,
        segmenter.num_clusters,
        many_to_one=many_to_one,
        groups=groups,
        total=count,
        progress=progress,
        on_result=on_result,
    )
    return with_skipped(results, dataset)


def groups_from_things(classes: Sequence[str], things: Iterable[str] | None) -> dict[str, list[int]]:
    """``{"things": ids, "stuff": ids}`` from a set of thing class names (``{}`` when there is none)."""
    if not things:
        return {}
    names = set(things)
    ids = [i for i, name in enumerate(classes) if name in names]
    return {"things": ids, "stuff": [i for i in range(len(classes)) if i not in ids]}


__all__ = [
    "THINGS_FILE",
    "evaluate_cluster_dataset",
    "evaluate_cluster_folder",
    "evaluate_cluster_samples",
    "groups_from_things",
    "matching_method",
    "read_groups",
]
