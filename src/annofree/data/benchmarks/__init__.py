"""Readers for the public segmentation benchmarks in the layouts users have on disk (VOC, PASCAL Context,
COCO-Object, COCO-Stuff-27, ADE20K, Cityscapes) plus the generic folder, all with one interface
(``BenchmarkDataset``); ``open_dataset(name, root)`` opens one by its command-line name."""

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample
from annofree.data.benchmarks.coco import convert_coco_object
from annofree.data.benchmarks.registry import DATASETS, open_dataset

__all__ = ["DATASETS", "BenchmarkDataset", "LabelDecoding", "Sample", "convert_coco_object", "open_dataset"]
