"""Unsupervised segmentation scores: match clusters to classes, then pixel accuracy and mIoU.

The input is a confusion matrix ``[num_classes, num_clusters]`` (rows: ground-truth class, columns:
predicted cluster; ignored pixels already left out), e.g. ``ConfusionMatrix.matrix``.

- ``"hungarian"`` (one-to-one, ``num_clusters <= num_classes``): ``linear_sum_assignment(max - conf)``,
  as the official DenseSiam/PiCIE evaluators do; it maximises the matched pixels.
- ``"majority"`` (many-to-one, any number of clusters, e.g. 128 over-clusters for 27 classes): each
  cluster goes to the class it overlaps most.
- ``"auto"``: Hungarian when there are no more clusters than classes, majority otherwise.

The clusters are then merged into their classes (:func:`remap_confusion`), giving a square class-by-class
matrix scored by :class:`~annofree.evaluation.metrics.ConfusionMatrix`: IoU ``TP / (TP + FP + FN)``,
NaN for a class in neither the ground truth nor the (remapped) predictions and left out of the means; a
class absent from the ground truth but predicted has IoU 0.

Groups (things / stuff) are indexed by the TRUE class and scored on the full matrix: a thing's IoU counts
its confusions with stuff too. The official evaluator instead reorders rows by matched cluster id and
slices the first 12 ROWS AND COLUMNS, i.e. by predicted cluster id (and drops cross-group confusions); its
overall figures are unaffected, its things/stuff figures are not comparable.

Example (three classes, the first a thing, found as clusters in another order; for COCO-Stuff-27 the groups
are ``{"things": range(12), "stuff": range(12, 27)}``):
    >>> conf = np.array([[0, 5, 50], [30, 0, 0], [0, 40, 10]])  # rows: classes, columns: clusters
    >>> scores = evaluate_clusters(conf, groups={"things": [0], "stuff": [1, 2]})
    >>> scores.mapping  # the class of each cluster
    array([1, 2, 0])
    >>> round(scores.miou, 3), round(scores.groups["things"]["miou"], 3)
    (0.832, 0.769)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from annofree.evaluation.metrics import ConfusionMatrix

Method = Literal["auto", "hungarian", "majority"]


def as_class_by_cluster(
    confusion: np.ndarray | torch.Tensor | ConfusionMatrix, num_classes: int | None = None
) -> np.ndarray:
    """The ``[num_classes, num_clusters]`` array of ``confusion``.

    A square ``ConfusionMatrix`` sized for the clusters (e.g. 128) while the ground truth has fewer classes
    (27) is cut to its first ``num_classes`` rows; those cut rows must be empty.
    """
    matrix = confusion.matrix if isinstance(confusion, ConfusionMatrix) else confusion
    matrix = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"confusion must be 2-D [classes, clusters], got shape {matrix.shape}")
    if num_classes is not None and num_classes != matrix.shape[0]:
        if num_classes > matrix.shape[0] or matrix[num_classes:].any():
            raise ValueError(f"confusion has {matrix.shape[0]} rows; cannot cut to {num_classes} without losing pixels")
        matrix = matrix[:num_classes]
    return matrix


def match_clusters(confusion: np.ndarray, method: Method = "auto") -> np.ndarray:
    """``[num_classes, num_clusters]`` counts -> ``mapping`` ``[num_clusters]``: the class of each cluster.

    With Hungarian matching and fewer clusters than classes, some classes get no cluster (IoU 0 when
    present). A cluster with no pixels at all goes to class 0 under majority (it predicts nothing).
    """
    num_classes, num_clusters = confusion.shape
    if method == "auto":
        method = "hungarian" if num_clusters <= num_classes else "majority"
    if method == "majority":
        return confusion.argmax(axis=0)
    if method != "hungarian":
        raise ValueError(f"method must be 'auto', 'hungarian' or 'majority', got {method!r}")
    if num_clusters > num_classes:
        raise ValueError(f"one-to-one matching of {num_clusters} clusters to {num_classes} classes: use 'majority'")
    rows, cols = linear_sum_assignment(confusion.max() - confusion)
    mapping = np.empty(num_clusters, dtype=np.int64)
    mapping[cols] = rows
    return mapping


def remap_confusion(confusion: np.ndarray, mapping: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Merge the cluster columns into their classes: ``[C, K]`` counts -> ``[C, C]``,
    ``out[t, c] = sum over clusters k with mapping[k] == c of confusion[t, k]``."""
    num_classes = confusion.shape[0] if num_classes is None else num_classes
    return confusion @ np.eye(num_classes, dtype=confusion.dtype)[np.asarray(mapping)]


def remap_predictions(pred: np.ndarray | torch.Tensor, mapping: np.ndarray) -> np.ndarray | torch.Tensor:
    """Cluster ids -> matched class ids, any shape; a torch tensor stays on its device."""
    if isinstance(pred, torch.Tensor):
        return torch.as_tensor(mapping, device=pred.device)[pred.long()]
    return np.asarray(mapping)[np.asarray(pred)]


@dataclass(frozen=True)
class ClusterScores:
    """Scores after matching; per-class arrays are indexed by the true class.

    ``groups`` maps a group name to ``{"miou", "mean_accuracy", "pixel_accuracy"}`` over that group's true
    classes (pixel accuracy: correctly labelled pixels of those classes / their ground-truth pixels).
    """

    mapping: np.ndarray  # [num_clusters] -> class id
    confusion: np.ndarray  # [C, C] after remapping; rows true class, columns matched class
    iou: np.ndarray  # [C], NaN where undefined
    class_accuracy: np.ndarray  # [C], NaN for classes absent from the ground truth
    pixel_accuracy: float
    miou: float
    mean_accuracy: float
    groups: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN -> None), in the layout of the folder evaluator plus ``mapping`` and
        ``groups``."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.iou))]
        return {
            "miou": _finite_or_none(self.miou),
            "pixel_accuracy": _finite_or_none(self.pixel_accuracy),
            "mean_accuracy": _finite_or_none(self.mean_accuracy),
            "per_class_iou": {n: _finite_or_none(v) for n, v in zip(names, self.iou, strict=True)},
            "per_class_accuracy": {n: _finite_or_none(v) for n, v in zip(names, self.class_accuracy, strict=True)},
            "groups": {g: {k: _finite_or_none(v) for k, v in m.items()} for g, m in self.groups.items()},
            "mapping": [int(c) for c in self.mapping],
        }


def evaluate_clusters(
    confusion: np.ndarray | torch.Tensor | ConfusionMatrix,
    num_classes: int | None = None,
    method: Method = "auto",
    groups: Mapping[str, Iterable[int]] | None = None,
) -> ClusterScores:
    """Match clusters to classes and score.

    Args:
        confusion: ``[num_classes, num_clusters]`` counts, or a ``ConfusionMatrix`` (see
            :func:`as_class_by_cluster` for one sized for more clusters than classes).
        num_classes: ground-truth classes (rows kept); None keeps all rows.
        method: ``"auto"``, ``"hungarian"`` or ``"majority"`` (module docstring).
        groups: e.g. ``{"things": range(12), "stuff": range(12, 27)}``, true class ids per group.
    """
    counts = as_class_by_cluster(confusion, num_classes)
    mapping = match_clusters(counts, method)
    matched = ConfusionMatrix(counts.shape[0], ignore_index=None)
    matched.matrix = remap_confusion(counts, mapping)
    iou, class_acc = matched.iou(), matched.class_accuracy()
    return ClusterScores(
        mapping=mapping,
        confusion=matched.matrix,
        iou=iou,
        class_accuracy=class_acc,
        pixel_accuracy=matched.pixel_accuracy(),
        miou=matched.miou(),
        mean_accuracy=matched.mean_accuracy(),
        groups={name: _group_scores(matched.matrix, iou, class_acc, ids) for name, ids in (groups or {}).items()},
    )


def _group_scores(matrix: np.ndarray, iou: np.ndarray, class_acc: np.ndarray, ids: Iterable[int]) -> dict[str, float]:
    idx = np.asarray(list(ids), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(iou)):
        raise ValueError(f"group class ids must be in 0..{len(iou) - 1}")
    gt_pixels = matrix[idx].sum()
    return {
        "miou": _nanmean(iou[idx]),
        "mean_accuracy": _nanmean(class_acc[idx]),
        "pixel_accuracy": float(np.diag(matrix)[idx].sum() / gt_pixels) if gt_pixels else float("nan"),
    }


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


__all__ = [
    "ClusterScores",
    "as_class_by_cluster",
    "evaluate_clusters",
    "match_clusters",
    "remap_confusion",
    "remap_predictions",
]
