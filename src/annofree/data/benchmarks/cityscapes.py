"""Cityscapes (fine annotations, the 19 evaluation classes), as distributed::

    leftImg8bit/{train,val,test}/CITY/CITY_000000_000019_leftImg8bit.png
    gtFine/{train,val,test}/CITY/CITY_000000_000019_gtFine_labelIds.png        8-bit label ids 0..33
    gtFine/{train,val,test}/CITY/CITY_000000_000019_gtFine_labelTrainIds.png   optional: train ids 0..18, 255

``root`` holds leftImg8bit/ and gtFine/. Label ids map to the 19 train ids with the official table
(cityscapesScripts ``helpers/labels.py``); the other ids (void, parking, rail track, guard rail, bridge,
tunnel, polegroup, caravan, trailer) are ignored. Where cityscapesScripts' ``createTrainIdLabelImgs`` has
written a ``*_labelTrainIds.png`` (what mmsegmentation's ``CityscapesDataset`` reads), that file is used
instead; both give the same ids. The 8 classes with instances in that table are the things.
"""

from __future__ import annotations

from pathlib import Path

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample, find_root, split_alias
from annofree.errors import UserError

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_THINGS = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
# Label id -> train id for the evaluated classes (cityscapesScripts helpers/labels.py); ids 0..33 all occur.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
LABEL_IDS = LabelDecoding.from_mapping(LABEL_ID_TO_TRAIN_ID, also_valid=range(34))
TRAIN_IDS = LabelDecoding.identity(19)
CITYSCAPES_LAYOUT = "{leftImg8bit,gtFine}/SPLIT/CITY/*"
IMAGE_SUFFIX = "_leftImg8bit.png"


def open_cityscapes(root: str | Path, split: str = "val", skip_bad: bool = False) -> BenchmarkDataset:
    """Cityscapes fine, 19 classes, no background class; things = the 8 instance classes."""
    split = split_alias(split, {}, ("train", "val", "test"))
    base = find_root(root, ["cityscapes", ""], ["leftImg8bit", "gtFine"], CITYSCAPES_LAYOUT)
    samples = [_sample(base, split, image) for image in _images(base / "leftImg8bit" / split)]
    title = f"Cityscapes {split} (19 classes)"
    return BenchmarkDataset(
        base, CITYSCAPES_CLASSES, samples, LABEL_IDS, things=CITYSCAPES_THINGS, title=title, skip_bad=skip_bad
    )


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (the Cityscapes images, one folder per city)")
    images = sorted(folder.glob(f"*/*{IMAGE_SUFFIX}"), key=lambda path: path.name)
    if not images:
        raise UserError(f"{folder}: no CITY/*{IMAGE_SUFFIX} images")
    return images


def _sample(base: Path, split: str, image: Path) -> Sample:
    name = image.name[: -len(IMAGE_SUFFIX)]
    labels = base / "gtFine" / split / image.parent.name
    train_ids = labels / f"{name}_gtFine_labelTrainIds.png"
    if train_ids.is_file():
        return Sample(name, image, train_ids, TRAIN_IDS)
    return Sample(name, image, labels / f"{name}_gtFine_labelIds.png")
