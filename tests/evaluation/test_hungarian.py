"""Cluster-to-class matching and scores on small confusion matrices worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from annofree.evaluation.hungarian import (
    as_class_by_cluster,
    evaluate_clusters,
    match_clusters,
    remap_confusion,
    remap_predictions,
)
from annofree.evaluation.metrics import ConfusionMatrix

# rows: true class, columns: cluster. Best one-to-one: class 0 <- cluster 1 (8), 1 <- 2 (6), 2 <- 0 (7).
PERMUTED = np.array([[1, 8, 1], [2, 0, 6], [7, 1, 0]])


def test_hungarian_undoes_a_permutation() -> None:
    mapping = match_clusters(PERMUTED, "hungarian")
    assert mapping.tolist() == [2, 0, 1]  # cluster -> class
    remapped = remap_confusion(PERMUTED, mapping)
    assert remapped.tolist() == [[8, 1, 1], [0, 6, 2], [1, 0, 7]]
    scores = evaluate_clusters(PERMUTED)
    assert scores.pixel_accuracy == pytest.approx(21 / 26)
    np.testing.assert_allclose(scores.iou, [8 / 11, 6 / 9, 7 / 11])
    assert scores.miou == pytest.approx((8 / 11 + 6 / 9 + 7 / 11) / 3)
    np.testing.assert_allclose(scores.class_accuracy, [8 / 10, 6 / 8, 7 / 8])
    assert scores.mean_accuracy == pytest.approx((0.8 + 0.75 + 0.875) / 3)


def test_groups_are_indexed_by_true_class() -> None:
    scores = evaluate_clusters(PERMUTED, groups={"things": [0], "stuff": [1, 2]})
    assert scores.groups["things"] == pytest.approx({"miou": 8 / 11, "mean_accuracy": 0.8, "pixel_accuracy": 0.8})
    assert scores.groups["stuff"]["miou"] == pytest.approx((6 / 9 + 7 / 11) / 2)
    assert scores.groups["stuff"]["pixel_accuracy"] == pytest.approx(13 / 16)
    # the official evaluator moves row t to the row of t's matched cluster and slices rows AND columns by
    # cluster id: its "things" (first row/column) is then true class 2 scored alone, IoU 7/7
    official = np.zeros((3, 3))
    rows, cols = np.arange(3), np.array([1, 2, 0])  # linear_sum_assignment's (class, cluster) pairs here
    official[cols] = PERMUTED[rows]
    sub = official[:1, :1]
    assert np.diag(sub).sum() / sub.sum() == 1.0 != scores.groups["things"]["miou"]


def test_absent_classes() -> None:
    # class 2 is in neither the ground truth nor the predictions: NaN, left out of the mean
    scores = evaluate_clusters(np.array([[5, 0, 0], [0, 3, 0], [0, 0, 0]]))
    assert scores.iou[:2].tolist() == [1.0, 1.0] and math.isnan(scores.iou[2])
    assert scores.miou == 1.0 and scores.pixel_accuracy == 1.0
    # class 2 absent from the ground truth but predicted (1 pixel of class 0): IoU 0, accuracy NaN
    scores = evaluate_clusters(np.array([[4, 0, 1], [0, 3, 0], [0, 0, 0]]))
    np.testing.assert_allclose(scores.iou, [0.8, 1.0, 0.0])
    assert scores.miou == pytest.approx(1.8 / 3)
    assert math.isnan(scores.class_accuracy[2]) and scores.mean_accuracy == pytest.approx(0.9)
    # a present class that no cluster reaches (fewer clusters than classes): IoU 0
    scores = evaluate_clusters(np.array([[5, 0], [0, 4], [1, 1]]))
    assert scores.mapping.tolist() == [0, 1]
    np.testing.assert_allclose(scores.iou, [5 / 6, 4 / 5, 0.0])
    assert scores.pixel_accuracy == pytest.approx(9 / 11)
    empty = evaluate_clusters(np.zeros((2, 2), dtype=np.int64), groups={"things": [0]})
    assert math.isnan(empty.miou) and math.isnan(empty.pixel_accuracy) and math.isnan(empty.groups["things"]["miou"])


def test_majority_for_over_clustering() -> None:
    conf = np.array([[5, 1, 0, 2], [0, 4, 3, 1]])  # 2 classes, 4 clusters
    assert match_clusters(conf, "majority").tolist() == [0, 1, 1, 0]
    scores = evaluate_clusters(conf)  # auto -> majority
    assert scores.confusion.tolist() == [[7, 1], [1, 7]]
    assert scores.pixel_accuracy == pytest.approx(14 / 16)
    np.testing.assert_allclose(scores.iou, [7 / 9, 7 / 9])
    with pytest.raises(ValueError, match="majority"):
        match_clusters(conf, "hungarian")
    with pytest.raises(ValueError):
        match_clusters(conf, "greedy")  # type: ignore[arg-type]


def test_from_a_confusion_matrix_sized_for_the_clusters() -> None:
    cm = ConfusionMatrix(4, ignore_index=255)
    gt = np.array([[0, 0, 1, 1, 255]])
    pred = np.array([[3, 3, 2, 0, 1]])
    cm.update(pred, gt)
    counts = as_class_by_cluster(cm, num_classes=2)
    assert counts.tolist() == [[0, 0, 0, 2], [1, 0, 1, 0]]
    scores = evaluate_clusters(cm, num_classes=2)
    assert scores.mapping.tolist() == [1, 0, 1, 0] and scores.pixel_accuracy == 1.0
    assert evaluate_clusters(torch.as_tensor(counts)).pixel_accuracy == 1.0
    cm.update(np.array([0]), np.array([3]))  # a pixel of class 3 would be lost by cutting to 2 classes
    with pytest.raises(ValueError):
        as_class_by_cluster(cm, num_classes=2)


def test_remap_predictions_and_summary() -> None:
    mapping = np.array([2, 0, 1])
    assert remap_predictions(np.array([[0, 1], [2, 2]]), mapping).tolist() == [[2, 0], [1, 1]]
    assert remap_predictions(torch.tensor([0, 2]), mapping).tolist() == [2, 1]
    summary = evaluate_clusters(np.array([[5, 0, 0], [0, 3, 0], [0, 0, 0]]), groups={"stuff": [2]}).summary(
        ["a", "b", "c"]
    )
    json.dumps(summary, allow_nan=False)  # NaN became None
    assert summary["per_class_iou"] == {"a": 1.0, "b": 1.0, "c": None}
    assert summary["groups"]["stuff"]["miou"] is None and summary["mapping"] == [0, 1, 2]
