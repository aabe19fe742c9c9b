"""Zero-shot evaluation of a GroupViT on a segmentation folder (images/, labels/, classes.txt).

Class ids come from ``classes.txt``. When id 0 is named "background" it is the background: predicted by
the threshold, never a text query. Otherwise every class is a text query and no background is predicted.
Label value 255 is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from annofree.errors import UserError
from annofree.evaluation.metrics import ConfusionMatrix
from annofree.evaluation.protocols import PROMPT_TEMPLATE_SETS, ZeroShotProtocol, zero_shot_protocol
from annofree.inference.pixels import upsample_argmax
from annofree.inference.result import SegmentationResult
from annofree.inference.settings import resolve_settings
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


OnResult = Callable[[str, np.ndarray, np.ndarray, SegmentationResult], None]


def evaluate_samples(
    segmenter: ZeroShotSegmenter,
    samples: Iterable[Sample],
    class_names: Sequence[str],
    *,
    total: int | None = None,
    progress: bool = True,
    ignore_index: int = 255,
    batch_size: int = 16,
    without_background: bool = False,
    on_result: OnResult | None = None,
) -> dict[str, Any]:
    """Segment each ``(name, image, label)`` and score it; label ids index ``class_names``.

    The segmenter's label ids must match the data set's (background first when it has one). Consecutive
    images of one size are segmented ``batch_size`` at a time (the results equal one-by-one segmentation).
    With ``without_background`` (a segmenter with background) the same pass is also scored without it,
    as VOC20 / Context59 are: background pixels ignored, each pixel given its best object class; the
    scores go under ``"without_background"``. ``on_result(name, image, label, result)`` sees every result.
    """
    matrix = ConfusionMatrix(len(class_names), ignore_index=ignore_index)
    objects = ConfusionMatrix(len(class_names) - 1, ignore_index=ignore_index) if without_background else None
    count = 0
    with tqdm(total=total, desc="evaluate", unit="img", disable=not progress) as bar:
        for batch in _same_size_batches(samples, batch_size):
            results = segmenter.segment_batch([image for _, image, _ in batch])
            for (name, image, label), result in zip(batch, results, strict=True):
                try:
                    matrix.update(result.label_map, label)
                    if objects is not None:
                        objects.update(*_objects_only(result, label, ignore_index))
                except ValueError as exc:
                    raise UserError(f"{name}: {exc}") from None
                if on_result is not None:
                    on_result(name, image, label, result)
            count += len(batch)
            bar.update(len(batch))
    summary = summarize(matrix, class_names, count)
    if objects is not None:
        summary["without_background"] = summarize(objects, class_names[1:], count)
    return summary


def _objects_only(result: SegmentationResult, label: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction among the object classes only, and the label with background ignored (ids shifted down)."""
    prediction = upsample_argmax(result.logits[1:].float(), result.size).numpy()
    shifted = label.astype(np.int64) - 1
    shifted[(label == 0) | (label == ignore_index)] = ignore_index
    return prediction, shifted


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
    template: str | Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    limit: int | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Zero-shot mIoU of ``model`` on a segmentation folder.

    The segmenter's settings are resolved option by option: ``options`` (e.g. ``bg_thresh=0.3``), else the
    settings stored with the weights (``model.inference_settings``), else the folder protocol's
    (``zero_shot_protocol("folder")``: whole images, the official image pipeline).

    Returns ``{"miou", "pixel_accuracy", "mean_accuracy", "per_class_iou": {name: iou or None},
    "per_class_accuracy", "num_images", "num_pixels"}`` (plus ``"without_background"`` when class 0 is the
    background). ``limit`` evaluates only the first images.
    """
    from annofree.data.folder import SegmentationFolder

    folder = zero_shot_protocol("folder")
    settings, _ = resolve_settings(getattr(model, "inference_settings", None), options, base=folder.settings)
    protocol = replace(folder, settings=settings, templates=PROMPT_TEMPLATE_SETS[settings.prompts])
    try:
        dataset = SegmentationFolder(root)
        return evaluate_dataset(
            model, dataset, protocol, template=template, tokenizer=tokenizer, limit=limit, progress=progress
        )
    except UserError as exc:
        message = str(exc)
        raise UserError(message if message.startswith(str(root)) else f"{root}: {message}") from None


def evaluate_dataset(
    model: nn.Module,
    dataset: Any,
    protocol: ZeroShotProtocol,
    *,
    template: str | Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    limit: int | None = None,
    progress: bool = True,
    on_result: OnResult | None = None,
    windows_per_batch: int = 8,
) -> dict[str, Any]:
    """Zero-shot scores of ``model`` on any data set (``classes``, ``len``, ``[i] -> (name, image, label)``).

    Id 0 is the background when the data set says so (``dataset.background``) or names it "background":
    it is then predicted by the threshold and scored with and without it. The other classes are prompted
    with ``protocol.queries`` (the reference's name edits) in the protocol's templates (``template`` given:
    those instead); results keep the data set's names.
    """
    classes = [str(c) for c in dataset.classes]
    if not classes:
        raise UserError("the data set lists no classes")
    with_background = bool(getattr(dataset, "background", classes[0].strip().lower() == BACKGROUND))
    objects = classes[1:] if with_background else classes
    if not objects:
        raise UserError("the data set has only the background; nothing to segment")
    segmenter = ZeroShotSegmenter(
        model,
        protocol.queries(objects),
        template=protocol.prompt_templates() if template is None else template,
        with_background=with_background,
        tokenizer=tokenizer,
        windows_per_batch=windows_per_batch,
        settings=protocol.settings,
    )
    samples, count = first_samples(dataset, limit)
    results = evaluate_samples(
        segmenter,
        samples,
        classes,
        total=count,
        progress=progress,
        without_background=with_background,
        on_result=on_result,
    )
    return with_skipped(results, dataset)


def first_samples(dataset: Any, limit: int | None) -> tuple[Iterator[Sample], int]:
    """The data set's samples (the first ``limit`` when given) as a lazy iterator, and how many there are."""
    count = len(dataset) if limit is None else min(len(dataset), max(0, int(limit)))
    if count == 0:
        raise UserError("no images to evaluate")
    return (dataset[i] for i in range(count)), count


def with_skipped(results: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """Add how many unreadable samples the data set left out (``skip_bad``), when it keeps count."""
    skipped = getattr(dataset, "skipped", None)
    if skipped is not None:
        results["skipped"] = len(skipped)
    return results


__all__ = ["evaluate_dataset", "evaluate_folder", "evaluate_samples", "first_samples", "summarize", "with_skipped"]
