import math

import numpy as np
import pytest
import torch

from annofree.evaluation.metrics import ConfusionMatrix

# Pairs (gt, pred) of the counted pixels below: (0,0) (1,1) (2,1) (2,2) (0,0); the 255 pixel is ignored.
PRED = np.array([[0, 1, 1], [2, 2, 0]])
GT = np.array([[0, 1, 2], [2, 255, 0]])


def test_confusion_matrix_counts_gt_rows_and_pred_columns():
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0], expected[1, 1], expected[2, 1], expected[2, 2] = 2, 1, 1, 1
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.total == 5


def test_metrics_by_hand_with_an_absent_class_and_ignored_pixels():
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    iou = cm.iou()
    # class 0: 2 / (2 + 2 - 2); class 1: 1 / (2 + 1 - 1); class 2: 1 / (1 + 2 - 1); class 3 in neither.
    assert iou[:3].tolist() == [1.0, 0.5, 0.5]
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 5)
    acc = cm.class_accuracy()
    assert acc[:3].tolist() == [1.0, 1.0, 0.5]
    assert math.isnan(acc[3])
    assert cm.mean_accuracy() == pytest.approx(2.5 / 3)


def test_a_class_predicted_but_absent_from_the_labels_counts_as_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2, 1, 1]), np.array([0, 0, 1, 1]))
    iou = cm.iou()
    # class 0: 1 / (1 + 2 - 1) = 0.5; class 1: 2 / 2 = 1; class 2: 0 / (1 + 0 - 0) = 0 (in the mean).
    assert iou.tolist() == [0.5, 1.0, 0.0]
    assert cm.miou() == pytest.approx(0.5)
    assert math.isnan(cm.class_accuracy()[2])  # no ground-truth pixels: no accuracy
    assert cm.mean_accuracy() == pytest.approx((0.5 + 1.0) / 2)


def test_streaming_updates_equal_one_update_and_torch_equals_numpy():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    gts = [np.where(rng.random((7, 9)) < 0.1, 255, rng.integers(0, 5, (7, 9))) for _ in range(3)]
    streamed, at_once, with_torch = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    for p, g in zip(preds, gts, strict=True):
        streamed.update(p, g)
        with_torch.update(torch.from_numpy(p), torch.from_numpy(g).to(torch.uint8))
    at_once.update(np.concatenate(preds), np.concatenate(gts))
    np.testing.assert_array_equal(streamed.matrix, at_once.matrix)
    np.testing.assert_array_equal(with_torch.matrix, at_once.matrix)
    assert streamed.total == sum(int((g != 255).sum()) for g in gts)
    first = ConfusionMatrix(5)
    first.update(preds[0], gts[0])
    first_counts = first.matrix.copy()
    np.testing.assert_array_equal(first.merge(streamed).matrix, first_counts + streamed.matrix)
    with pytest.raises(ValueError, match="merge"):
        first.merge(ConfusionMatrix(4))


def test_out_of_range_ids_and_shape_mismatch_are_refused():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"ground truth has class ids \[7\]"):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(ValueError, match=r"prediction has class ids \[3\]"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(np.zeros((2, 3)), np.zeros((3, 2)))
    assert cm.total == 0  # nothing half-counted


def test_without_ignore_index_every_pixel_counts_and_empty_matrix_gives_nan():
    cm = ConfusionMatrix(3, ignore_index=None)
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.array([0]), np.array([255]))
    cm.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
    assert cm.total == 3
    cm.reset()
    assert cm.total == 0
