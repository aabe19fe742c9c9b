"""Inference: zero-shot segmentation with GroupViT (whole image or sliding windows)."""

from annofree.inference.sliding import slide, window_boxes
from annofree.inference.zero_shot import SegmentationResult, ZeroShotSegmenter, class_embeddings

__all__ = ["SegmentationResult", "ZeroShotSegmenter", "class_embeddings", "slide", "window_boxes"]
