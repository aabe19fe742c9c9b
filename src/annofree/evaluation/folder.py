"""Zero-shot evaluation of a GroupViT on a segmentation folder (images/, labels/, classes.txt).

Class ids come from ``classes.txt``. When id 0 is named "background" it is the background: predicted by
the threshold, never a text query. Otherwise every class is a text query and no background is predicted.
Label value 255 is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn
from tqdm import tqdm

from annofree.errors import UserError
from annofree.evaluation.metrics import ConfusionMatrix
from annofree.inference.zero_shot import BACKGROUND, Tokenizer, ZeroShotSegmenter

Sample = tuple[str, np.ndarray, np.ndarray]  # (name, uint8 image [H, W, 3], uint8 label [H, W])


def _finite_or_none(value: float) -> float | None:
    """NaN (no such pixels) -> None, so that results stay valid JSON."""
    return None if math.isnan(value) else float(value)


def summarize(matrix: ConfusionMatrix, class_names: Sequence[str], num_images: int) -> dict[str, Any]:
    """The metrics dictionary; per-class values are None for classes absent from predictions and labels."""
    return {
        "miou": _finite_or_none(matrix.miou()),
        "pixel_accuracy": _finite_or_none(matrix.pixel_accuracy()),
        "mean_accuracy": _finite_or_none(matrix.mean_accuracy()),
        "per_class_iou": {name: _finite_or_none(v) for name, v in zip(class_names, matrix.iou(), strict=True)},
        "per_class_accuracy": {
            name: _finite_or_none(v) for name, v in zip(class_names, matrix.class_accuracy(), strict=True)
        },
        "num_images": int(num_images),
        "num_pixels": matrix.total,
    }


def evaluate_samples(
    segmenter: ZeroShotSegmenter,
    samples: Iterable[Sample],
    class_names: Sequence[str],
    *,
    total: int | None = None,
    progress: bool = True,
    ignore_index: int = 255,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Segment each ``(name, image, label)`` and score it; label ids index ``class_names``.

    The segmenter's label ids must match the data set's (background first when it has one). Consecutive
    images of one size are segmented ``batch_size`` at a time (the results equal one-by-one segmentation).
    """
    matrix = ConfusionMatrix(len(class_names), ignore_index=ignore_index)
    count = 0
    with tqdm(total=total, desc="evaluate", unit="img", disable=not progress) as bar:
        for batch in _same_size_batches(samples, batch_size):
            results = segmenter.segment_batch([image for _, image, _ in batch])
            for (name, _, label), result in zip(batch, results, strict=True):
                try:
                    matrix.update(result.label_map, label)
                except ValueError as exc:
                    raise UserError(f"{name}: {exc}") from None
            count += len(batch)
            bar.update(len(batch))
    return summarize(matrix, class_names, count)


def _same_size_batches(samples: Iterable[Sample], batch_size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for name, image, label in samples:
        if tuple(label.shape[:2]) != tuple(image.shape[:2]):
            raise UserError(f"{name}: label size {label.shape[:2]} differs from image size {image.shape[:2]}")
        if batch and (image.shape != batch[0][1].shape or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append((name, image, label))
    if batch:
        yield batch


def evaluate_folder(
    model: nn.Module,
    root: str | Path,
    *,
    bg_thresh: float = 0.95,
    mode: Literal["whole", "slide"] = "whole",
    window: int = 448,
    stride: int = 224,
    short_side: int | None = 448,
    topk: int | None = 5,
    template: str | Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Zero-shot mIoU of ``model`` on a segmentation folder.

    Returns ``{"miou", "pixel_accuracy", "mean_accuracy", "per_class_iou": {name: iou or None},
    "per_class_accuracy", "num_images", "num_pixels"}``. ``limit`` evaluates only the first images.
    """
    from annofree.data.folder import SegmentationFolder

    dataset = SegmentationFolder(root)
    classes = [str(c) for c in dataset.classes]
    if not classes:
        raise UserError(f"{root}: classes.txt lists no classes")
    with_background = classes[0].strip().lower() == BACKGROUND
    queries = classes[1:] if with_background else classes
    if not queries:
        raise UserError(f"{root}: classes.txt has only the background; nothing to segment")
    try:
        segmenter = ZeroShotSegmenter(
            model,
            queries,
            bg_thresh=bg_thresh,
            topk=topk,
            template=template,
            mode=mode,
            window=window,
            stride=stride,
            short_side=short_side,
            with_background=with_background,
            tokenizer=tokenizer,
        )
    except UserError as exc:
        raise UserError(f"{root}: {exc}") from None
    count = len(dataset) if limit is None else min(len(dataset), max(0, int(limit)))
    if count == 0:
        raise UserError(f"{root}: no images to evaluate")
    samples = (dataset[i] for i in range(count))
    return evaluate_samples(segmenter, samples, classes, total=count, progress=progress)


__all__ = ["evaluate_folder", "evaluate_samples", "summarize"]
