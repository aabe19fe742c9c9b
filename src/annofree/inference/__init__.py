"""Inference: zero-shot segmentation with GroupViT (whole image or sliding windows); DenseSiam clusters.

``build_segmenter(model, ...)`` is the one door: it builds whichever segmenter the model's method registered
(:mod:`annofree.inference.segmenters`); every segmenter returns a :class:`SegmentationResult`.
"""

from annofree.inference.clusters import ClusterSegmenter, segment_clusters
from annofree.inference.result import SegmentationResult
from annofree.inference.segmenters import build_segmenter, segmenter_kind
from annofree.inference.sliding import slide, window_boxes
from annofree.inference.zero_shot import ZeroShotSegmenter, class_embeddings

__all__ = [
    "ClusterSegmenter",
    "SegmentationResult",
    "ZeroShotSegmenter",
    "build_segmenter",
    "class_embeddings",
    "segment_clusters",
    "segmenter_kind",
    "slide",
    "window_boxes",
]
