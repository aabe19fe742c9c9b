"""COCO-Object (80 COCO objects + background), built from COCO-Stuff-164k::

    images/{train2017,val2017}/000000000139.jpg
    annotations/{train2017,val2017}/000000000139.png                     COCO-Stuff fine ids (see below)
    annotations/{train2017,val2017}/000000000139_instanceTrainIds.png    written by convert_coco_object

``root`` holds images/ and annotations/ (or holds them in ``cocostuff/`` or ``coco/``). The raw
COCO-Stuff-164k label PNGs (``stuffthingmaps_trainval2017``) hold the COCO category id minus one: 0..90 for
the 80 things (the values of COCO's 11 unused categories never occur), 91..181 for the 91 stuff classes, 255
for unlabelled pixels. COCO-Object, as GroupViT defines it (``convert_dataset/convert_coco_object.py`` and
``segmentation/datasets/coco_object.py``), keeps the 80 things as ids 1..80 in COCO order and makes every stuff
pixel *and every unlabelled pixel* background (id 0); GroupViT's table sends 255 to 0 as well, and this module
follows it so that numbers compare with the paper's. Class names as GroupViT's ``COCOObjectDataset``.

GroupViT evaluates the converted ``*_instanceTrainIds.png`` files; ``convert_coco_object`` writes them. The
reader uses a converted file where one exists and otherwise decodes the raw PNG with the same table, so a
conversion is optional.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample, find_root, list_files, split_alias
from annofree.data.folder import read_label
from annofree.errors import UserError

logger = logging.getLogger(__name__)

COCO_OBJECT_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
# Raw COCO-Stuff values (COCO category id - 1) of the 80 things, in COCO order: 0..89 less the values of COCO's
# unused categories (street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door, blender; hair
# brush, raw 90, follows the last thing).
UNUSED_THING_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82)
COCO_THING_VALUES = tuple(value for value in range(90) if value not in UNUSED_THING_VALUES)
COCO_STUFF_VALUES = tuple(range(91, 182))
COCO_RAW_VALUES = range(182)  # 0..181 may occur (unused thing ids included, ignored), and 255 = unlabelled
UNLABELLED = 255

COCO_OBJECT_RAW = LabelDecoding.from_mapping(
    {
        **{value: index + 1 for index, value in enumerate(COCO_THING_VALUES)},  # things -> 1..80
        **dict.fromkeys(COCO_STUFF_VALUES, 0),  # stuff -> background
        UNLABELLED: 0,  # unlabelled -> background, as GroupViT's table does
    },
    also_valid=COCO_RAW_VALUES,
)
COCO_OBJECT_CONVERTED = LabelDecoding.identity(len(COCO_OBJECT_CLASSES))
CONVERTED_SUFFIX = "_instanceTrainIds.png"
COCO_LAYOUT = "{images,annotations}/{train2017,val2017}"
SPLITS = {"val": "val2017", "train": "train2017"}


def coco_root(root: str | Path) -> Path:
    """The COCO-Stuff-164k folder holding images/ and annotations/: ``root``, ``root/cocostuff`` or ``root/coco``."""
    return find_root(root, ["", "cocostuff", "coco"], ["images", "annotations"], COCO_LAYOUT)


def open_coco_object(root: str | Path, split: str = "val", skip_bad: bool = False) -> BenchmarkDataset:
    """COCO-Object: background + the 80 COCO objects; every image in ``images/SPLIT``."""
    folder = split_alias(split, SPLITS, SPLITS.values())
    base = coco_root(root)
    images = list_files(base / "images" / folder, ".jpg", f"the COCO {folder} images")
    samples = [_object_sample(base / "annotations" / folder, image) for image in images]
    title = f"COCO-Object {folder} (81 classes)"
    return BenchmarkDataset(
        base, COCO_OBJECT_CLASSES, samples, COCO_OBJECT_RAW, background=True, title=title, skip_bad=skip_bad
    )


def _object_sample(labels: Path, image: Path) -> Sample:
    converted = labels / f"{image.stem}{CONVERTED_SUFFIX}"
    if converted.is_file():
        return Sample(image.stem, image, converted, COCO_OBJECT_CONVERTED)
    return Sample(image.stem, image, labels / f"{image.stem}.png")


def convert_coco_object(
    root: str | Path,
    split: str = "val2017",
    force: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write ``annotations/SPLIT/NAME_instanceTrainIds.png`` (COCO-Object ids, 8-bit grey) for every raw
    COCO-Stuff label ``annotations/SPLIT/NAME.png`` (names containing ``TrainIds`` are outputs, not inputs,
    as in GroupViT's converter); returns the counts ``{"written", "existing", "bad"}``.

    Existing outputs are kept unless ``force``; each file is written to a temporary name and renamed, so an
    interrupted run leaves no half-written PNG. Unreadable labels (or ones holding values COCO-Stuff does not
    use) are left unconverted and reported in one warning. ``workers`` threads share the work; ``progress``
    is called with (done, total) after each file.
    """
    folder = split_alias(split, SPLITS, SPLITS.values())
    labels = coco_root(root) / "annotations" / folder
    sources = [
        path for path in list_files(labels, ".png", f"the COCO-Stuff {folder} labels") if "TrainIds" not in path.name
    ]
    if not sources:
        raise UserError(f"{labels}: no raw COCO-Stuff label PNGs (NAME.png) to convert")
    outcomes = {"written": 0, "existing": 0, "bad": 0}
    bad: list[str] = []

    def convert(source: Path) -> str:
        target = source.with_name(f"{source.stem}{CONVERTED_SUFFIX}")
        if target.exists() and not force:
            return "existing"
        try:
            ids = COCO_OBJECT_RAW(read_label(source), source)
        except UserError as exc:
            bad.append(str(exc))
            return "bad"
        _write_png_atomically(ids, target)
        return "written"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for done, outcome in enumerate(pool.map(convert, sources), start=1):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if progress is not None:
                progress(done, len(sources))
    if bad:
        logger.warning("%s: %d unreadable labels left unconverted (first: %s)", labels, len(bad), bad[0])
    logger.info("%s: wrote %d, kept %d existing", labels, outcomes["written"], outcomes["existing"])
    return outcomes


def _write_png_atomically(ids: np.ndarray, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(ids)).save(temporary, format="PNG")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
