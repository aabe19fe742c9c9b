"""Inference: zero-shot segmentation with GroupViT (whole image or sliding windows); DenseSiam clusters."""

from annofree.inference.clusters import ClusterSegmenter, segment_clusters
from annofree.inference.sliding import slide, window_boxes
from annofree.inference.zero_shot import SegmentationResult, ZeroShotSegmenter, class_embeddings

__all__ = [
    "ClusterSegmenter",
    "SegmentationResult",
    "ZeroShotSegmenter",
    "class_embeddings",
    "segment_clusters",
    "slide",
    "window_boxes",
]
