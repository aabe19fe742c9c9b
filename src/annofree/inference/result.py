"""What every segmenter returns for one image: :class:`SegmentationResult`, and the one pixel-share rule.

GroupViT's zero-shot segmenter labels pixels with the class names it was given (background first), DenseSiam's
cluster segmenter with its clusters ("cluster 0", "cluster 1", ...); both answer with this record, so that the
writers (``annofree segment``), the app and the evaluations read one type.

Example:
    >>> import numpy as np, torch
    >>> result = SegmentationResult(np.array([[0, 0], [2, 0]]), ["sky", "cow", "grass"], torch.zeros(3, 1, 1))
    >>> result.fractions()
    {'sky': 0.75, 'cow': 0.0, 'grass': 0.25}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from annofree.inference.pixels import resize_bilinear


def pixel_fractions(label_map: np.ndarray, num_labels: int) -> np.ndarray:
    """``float [num_labels]``: the share of the map's pixels that each label id holds (0 for an empty map)."""
    label_map = np.asarray(label_map)
    counts = np.bincount(label_map.ravel(), minlength=num_labels)[:num_labels]
    return counts / max(int(label_map.size), 1)


@dataclass
class SegmentationResult:
    """The segmentation of one image.

    ``label_map`` is at the input's resolution; ``logits`` at the resolution the model saw (after the
    optional short-side resize, or the features' own for DenseSiam), so that large photos with many labels stay
    cheap. ``scores`` resizes the logits to the input on demand.
    """

    label_map: np.ndarray  # [H, W] int64; class_names[label] names each pixel
    class_names: list[str]  # per label id: the classes ("background" first when there is one), or the clusters
    logits: torch.Tensor  # [K, h, w] float32 on the CPU, K = len(class_names)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the input image."""
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    @property
    def scores(self) -> torch.Tensor:
        """``[K, H, W]`` per-label scores at the input's resolution (argmax equals ``label_map``)."""
        return resize_bilinear(self.logits[None], self.size)[0]

    def fractions(self) -> dict[str, float]:
        """Fraction of the image's pixels given to each label (background included), in label order."""
        shares = pixel_fractions(self.label_map, len(self.class_names))
        return {name: float(share) for name, share in zip(self.class_names, shares, strict=True)}


__all__ = ["SegmentationResult", "pixel_fractions"]
