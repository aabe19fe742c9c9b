"""Unsupervised segmentation with DenseSiam: every pixel gets the cluster id its projector channel argmax gives.

The projector logits are computed at the working resolution (the shorter side resized to ``short_side``,
``DENSESIAM_SHORT_SIDE`` = 320 by default as in the unsupervised protocol; 0 keeps the size), then resized
bilinearly to the input's size before the argmax, so the cluster map always matches the input. Without a resize
the result equals :meth:`DenseSiam.segment_clusters`. Images are anything
:func:`annofree.data.images.to_pixel_batch` reads. The result is the one every segmenter gives
(:class:`annofree.inference.result.SegmentationResult`): ``label_map`` holds the cluster ids and ``class_names``
the clusters ("cluster 0", "cluster 1", ...).

Example:
    >>> segmenter = ClusterSegmenter(annofree.load("runs/ds"))  # doctest: +SKIP
    >>> clusters = segmenter.segment("photo.jpg").label_map  # [H, W] int64, ids 0..num_clusters - 1  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from annofree.inference.pixels import ImageLike, eval_mode, resize_short_side, to_pixel_batch, upsample_argmax
from annofree.inference.result import SegmentationResult
from annofree.inference.settings import check_short_side

DENSESIAM_SHORT_SIDE = 320  # the unsupervised protocol's (PiCIE, STEGO, DenseSiam): the API's, segment's, app's


def cluster_names(num_clusters: int) -> list[str]:
    """Legend names of the cluster ids: ``["cluster 0", "cluster 1", ...]``."""
    return [f"cluster {i}" for i in range(num_clusters)]


class ClusterSegmenter:
    """Segment images into a DenseSiam's clusters at their own resolution.

    Args:
        model: a ``DenseSiam`` (anything with ``dense_features``, ``projector`` and ``config.dense_dim``).
        short_side: resize the shorter side to this before inference (0: keep the size).
        images_per_batch: images per forward pass in :meth:`segment_batch`.
    """

    def __init__(self, model: nn.Module, short_side: int | None = DENSESIAM_SHORT_SIDE, images_per_batch: int = 8):
        self.model = model
        self.short_side = check_short_side(short_side)
        self.images_per_batch = max(1, int(images_per_batch))
        self.num_clusters = int(model.config.dense_dim)

    @property
    def labels(self) -> list[str]:
        return cluster_names(self.num_clusters)

    def notes(self) -> list[str]:
        """What a command says before segmenting: the short side the clusters are computed at."""
        return [f"DenseSiam clusters at short side {self.short_side or 'kept'}"]

    def low_res_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> projector logits ``[B, K, h, w]`` at the features' resolution."""
        param = next(self.model.parameters())
        pixels = pixels.to(device=param.device, dtype=torch.float32)
        if self.short_side is not None:
            pixels = resize_short_side(pixels, int(self.short_side))
        with eval_mode(self.model):
            # Kept at feature resolution: upsampling all K maps of a big photo at once would not fit.
            return self.model.projector(self.model.dense_features(pixels.to(param.dtype))).float()

    def segment_batch(self, images: ImageLike | Sequence[ImageLike]) -> list[SegmentationResult]:
        """Several images of one size -> one result each (``label_map``: ``int64 [H, W]`` cluster ids)."""
        pixels = to_pixel_batch(images)
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        results = []
        for start in range(0, pixels.shape[0], self.images_per_batch):
            for one in self.low_res_logits(pixels[start : start + self.images_per_batch]):
                label_map = upsample_argmax(one, size).cpu().numpy().astype(np.int64)
                results.append(SegmentationResult(label_map, self.labels, one.cpu()))
        return results

    def segment(self, image: ImageLike) -> SegmentationResult:
        """One image (a path, a PIL image, or an array or tensor of any dtype and channel count) -> its result,
        ``label_map`` the ``int64 [H, W]`` cluster ids at its own size."""
        return self.segment_batch([image])[0]

    def cluster_maps(self, images: ImageLike | Sequence[ImageLike]) -> list[np.ndarray]:
        """Only the cluster maps of :meth:`segment_batch` (what the cluster scoring reads)."""
        return [result.label_map for result in self.segment_batch(images)]


def segment_clusters(
    model: nn.Module, images: ImageLike | Sequence[ImageLike], short_side: int | None = DENSESIAM_SHORT_SIDE
) -> list[np.ndarray]:
    """Cluster maps of same-size images at their own resolution (see :class:`ClusterSegmenter`)."""
    return ClusterSegmenter(model, short_side).cluster_maps(images)


__all__ = ["DENSESIAM_SHORT_SIDE", "ClusterSegmenter", "cluster_names", "segment_clusters"]
