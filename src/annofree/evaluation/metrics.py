"""Segmentation metrics from a streaming confusion matrix.

Rows are ground-truth classes, columns predictions. IoU of a class is ``TP / (TP + FP + FN)``; a class
absent from both the predictions and the ground truth has no IoU (NaN) and is left out of the mean,
as in mmsegmentation. Pixels whose ground truth is ``ignore_index`` are not counted at all.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


class ConfusionMatrix:
    """Accumulates a ``[num_classes, num_classes]`` confusion matrix over many images."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one prediction and its ground truth (same shape, integer class ids).

        Torch tensors are counted where they live (e.g. on the GPU); numpy arrays with numpy.
        """
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        n = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor):
            pred_t, gt_t = torch.as_tensor(pred).reshape(-1).long(), torch.as_tensor(gt).reshape(-1).long()
            gt_t = gt_t.to(pred_t.device)
            if self.ignore_index is not None:
                keep = gt_t != self.ignore_index
                pred_t, gt_t = pred_t[keep], gt_t[keep]
            self._check_range(pred_t, gt_t)
            counts = torch.bincount(gt_t * n + pred_t, minlength=n * n).cpu().numpy()
        else:
            pred_a, gt_a = np.asarray(pred).reshape(-1).astype(np.int64), np.asarray(gt).reshape(-1).astype(np.int64)
            if self.ignore_index is not None:
                keep = gt_a != self.ignore_index
                pred_a, gt_a = pred_a[keep], gt_a[keep]
            self._check_range(pred_a, gt_a)
            counts = np.bincount(gt_a * n + pred_a, minlength=n * n)
        self.matrix += counts.reshape(n, n)

    def _check_range(self, pred: ArrayLike, gt: ArrayLike) -> None:
        for name, values in (("ground truth", gt), ("prediction", pred)):
            if values.shape[0] and (int(values.min()) < 0 or int(values.max()) >= self.num_classes):
                bad = sorted({int(v) for v in values[(values < 0) | (values >= self.num_classes)][:1000].tolist()})
                raise ValueError(
                    f"{name} has class ids {bad[:10]} outside 0..{self.num_classes - 1}"
                    + (f" (ignore index {self.ignore_index})" if self.ignore_index is not None else "")
                )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (e.g. from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix
        return self

    # ------------------------------------------------------------------ metrics

    @property
    def total(self) -> int:
        """Counted (not ignored) pixels."""
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN where a class is in neither the predictions nor the ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall ``TP / ground-truth pixels``; NaN for classes absent from the ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        gt = self.matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt > 0, tp / gt, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that have one (NaN if none has)."""
        return _nanmean(self.iou())

    def mean_accuracy(self) -> float:
        """Mean per-class accuracy over classes present in the ground truth."""
        return _nanmean(self.class_accuracy())

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (NaN when nothing was counted)."""
        total = self.total
        return float(np.trace(self.matrix) / total) if total else float("nan")


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


__all__ = ["ConfusionMatrix"]
