"""PASCAL Context, as mmsegmentation's ``tools/convert_datasets/pascal_context.py`` prepares it::

    VOCdevkit/VOC2010/
      JPEGImages/2008_000002.jpg
      SegmentationClassContext/2008_000002.png   8-bit ids: 0 = background, 1..59 = the 59 classes
      ImageSets/SegmentationContext/val.txt      one name per line (train.txt likewise)

``root`` may be the folder holding VOCdevkit, VOCdevkit itself, or VOC2010. Two views, as in the papers:
Context60 (``context60``: background is class 0; mmseg's ``PascalContextDataset``) and Context59
(``context59``: background ignored and the ids shifted down by one; mmseg's ``PascalContextDataset59``, i.e.
``reduce_zero_label``). Class names and order as mmsegmentation's.
"""

from __future__ import annotations

from pathlib import Path

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample, find_root, read_split_list

CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)  # fmt: skip
CONTEXT60_CLASSES = ("background", *CONTEXT59_CLASSES)
CONTEXT_LAYOUT = "VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext,ImageSets/SegmentationContext}"


def open_context(
    root: str | Path, split: str = "val", background: bool = True, skip_bad: bool = False
) -> BenchmarkDataset:
    """PASCAL Context: ``background=True`` gives the 60 classes (Context60), ``False`` the 59 (Context59)."""
    base = find_root(
        root, ["VOCdevkit/VOC2010", "VOC2010", ""], ["JPEGImages", "SegmentationClassContext"], CONTEXT_LAYOUT
    )
    names = read_split_list(base / "ImageSets" / "SegmentationContext" / f"{split}.txt", f"the Context {split!r} split")
    labels = base / "SegmentationClassContext"
    samples = [Sample(name, base / "JPEGImages" / f"{name}.jpg", labels / f"{name}.png") for name in names]
    if background:
        classes, decoding = CONTEXT60_CLASSES, LabelDecoding.identity(60)
    else:
        classes, decoding = CONTEXT59_CLASSES, LabelDecoding.reduce_zero(59)
    title = f"PASCAL Context {split} ({len(classes)} classes)"
    return BenchmarkDataset(base, classes, samples, decoding, background=background, title=title, skip_bad=skip_bad)


def open_context59(root: str | Path, split: str = "val", skip_bad: bool = False) -> BenchmarkDataset:
    """PASCAL Context without background (Context59): see ``open_context``."""
    return open_context(root, split, background=False, skip_bad=skip_bad)
