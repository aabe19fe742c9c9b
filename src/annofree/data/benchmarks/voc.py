"""PASCAL VOC 2012 segmentation, as distributed::

    VOCdevkit/VOC2012/
      JPEGImages/2007_000033.jpg
      SegmentationClass/2007_000033.png     palette PNG: index = class id (0 = background, 1..20),
                                            255 = the "void" border around objects (ignored)
      ImageSets/Segmentation/val.txt        one name per line (train.txt, trainval.txt likewise)

``root`` may be the folder holding VOCdevkit, VOCdevkit itself, or VOC2012. The palette PNGs are read as their
indices, never their colours. Two views: VOC21 (``voc``: background + 20 objects, the zero-shot protocol's
"with background" number) and VOC20 (``voc20``: background pixels ignored and the object ids shifted down by
one, the "without background" number). Class names and order as mmsegmentation's ``PascalVOCDataset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample, find_root, read_split_list

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_LAYOUT = "VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}"


def voc_palette(size: int = 256) -> np.ndarray:
    """The VOC colour map, ``uint8 [size, 3]``: index i's colour spreads i's bits over the three channels from
    the most significant bit down (1 = (128, 0, 0), 15 = person (192, 128, 128), 255 = void (224, 224, 192))."""
    index = np.arange(size)
    palette = np.zeros((size, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def open_voc(root: str | Path, split: str = "val", background: bool = True, skip_bad: bool = False) -> BenchmarkDataset:
    """PASCAL VOC 2012: ``background=True`` gives the 21 classes (VOC21), ``False`` the 20 objects with
    background pixels ignored (VOC20)."""
    base = find_root(root, ["VOCdevkit/VOC2012", "VOC2012", ""], ["JPEGImages", "SegmentationClass"], VOC_LAYOUT)
    names = read_split_list(base / "ImageSets" / "Segmentation" / f"{split}.txt", f"the VOC {split!r} split")
    samples = [
        Sample(name, base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClass" / f"{name}.png") for name in names
    ]
    if background:
        classes, decoding = VOC_CLASSES, LabelDecoding.identity(21)
    else:
        classes, decoding = VOC_CLASSES[1:], LabelDecoding.reduce_zero(20)
    title = f"PASCAL VOC 2012 {split} ({len(classes)} classes)"
    return BenchmarkDataset(base, classes, samples, decoding, background=background, title=title, skip_bad=skip_bad)


def open_voc20(root: str | Path, split: str = "val", skip_bad: bool = False) -> BenchmarkDataset:
    """PASCAL VOC 2012 without background (VOC20): see ``open_voc``."""
    return open_voc(root, split, background=False, skip_bad=skip_bad)
