"""COCO-Stuff-27, the unsupervised segmentation benchmark of IIC, PiCIE and STEGO::

    images/{train2017,val2017}/000000000139.jpg
    annotations/{train2017,val2017}/000000000139.png               COCO-Stuff fine ids (see coco.py), 255 = unlabelled
    curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse_7.txt    optional: the curated image ids, one per line

``root`` holds images/ and annotations/ (or holds them in ``cocostuff/``, STEGO's layout). The
182 fine ids fold into the 27 supercategories of the COCO-Stuff label hierarchy: 12 thing supercategories (ids
0..11) and 15 stuff ones (ids 12..26), unlabelled stays ignored. The coarse order and the fine -> coarse
assignment are STEGO's (``Coco.fine_to_coarse`` in ``src/data.py``, names from its
``get_class_labels("cocostuff27")``), the benchmark PiCIE and IIC defined (PiCIE loads its table from a
``fine_to_coarse_dict.pickle`` outside its repository). The table below is rebuilt from the supercategories of
the COCO-Stuff category list and was checked equal to STEGO's. STEGO names two classes "food" and two
"furniture" and writes "rawmaterial"; here the stuff ones carry COCO-Stuff's own supercategory names
("food-stuff", "furniture-stuff", "raw-material") so that names are unique.

The papers evaluate the curated image list ``Coco164kFull_Stuff_Coarse_7.txt`` (IIC's, shipped in PiCIE's
``curated/`` folder). With ``curated=None`` it is used when present and every image of the split otherwise,
unless a ``curated/`` folder exists without it (a wrong list name would silently change the benchmark, so that
is an error); ``curated=True`` requires it, ``curated=False`` uses every image.
"""

from __future__ import annotations

from pathlib import Path

from annofree.data.benchmarks.base import (
    BenchmarkDataset,
    LabelDecoding,
    Sample,
    list_files,
    read_split_list,
    split_alias,
)
from annofree.data.benchmarks.coco import COCO_RAW_VALUES, SPLITS, coco_root
from annofree.errors import UserError

# Thing supercategories in the benchmark's order, each with its run of raw values (COCO id - 1); the unused
# COCO ids inside a run belong to the same supercategory and never occur in the labels.
THING_RUNS = {
    "electronic": range(71, 77),
    "appliance": range(77, 83),
    "food": range(51, 61),
    "furniture": range(61, 71),
    "indoor": range(83, 91),
    "kitchen": range(43, 51),
    "accessory": range(25, 33),
    "animal": range(15, 25),
    "outdoor": range(9, 15),
    "person": range(0, 1),
    "sports": range(33, 43),
    "vehicle": range(1, 9),
}
# The 91 COCO-Stuff stuff classes in id order: raw value 91 + index.
COCO_STUFF_NAMES = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel",
    "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
# Stuff supercategories in the benchmark's order, each with its stuff classes (space-separated; COCO-Stuff's
# hierarchy).
STUFF_GROUPS = {
    "ceiling": "ceiling-other ceiling-tile",
    "floor": "carpet floor-marble floor-other floor-stone floor-tile floor-wood",
    "food-stuff": "food-other fruit salad vegetable",
    "furniture-stuff": (
        "cabinet counter cupboard desk-stuff door-stuff furniture-other light mirror-stuff shelf stairs table"
    ),
    "raw-material": "cardboard metal paper plastic",
    "textile": "banner blanket cloth clothes curtain mat napkin pillow rug textile-other towel",
    "wall": "wall-brick wall-concrete wall-other wall-panel wall-stone wall-tile wall-wood",
    "window": "window-blind window-other",
    "building": "bridge building-other house roof skyscraper tent",
    "ground": "dirt gravel ground-other mud pavement platform playingfield railroad road sand snow",
    "plant": "branch bush flower grass leaves moss plant-other straw tree",
    "sky": "clouds sky-other",
    "solid": "hill mountain rock solid-other stone wood",
    "structural": "cage fence net railing structural-other",
    "water": "fog river sea water-other waterdrops",
}
COCOSTUFF27_CLASSES = (*THING_RUNS, *STUFF_GROUPS)
COCOSTUFF27_THINGS = tuple(THING_RUNS)
CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"


def fine_to_coarse() -> dict[int, int]:
    """Raw COCO-Stuff value (0..181) -> coarse id (0..26)."""
    mapping = {raw: coarse for coarse, run in enumerate(THING_RUNS.values()) for raw in run}
    stuff_value = {name: 91 + index for index, name in enumerate(COCO_STUFF_NAMES)}
    for coarse, names in enumerate(STUFF_GROUPS.values(), start=len(THING_RUNS)):
        mapping.update({stuff_value[name]: coarse for name in names.split()})
    return mapping


COCOSTUFF27_DECODING = LabelDecoding.from_mapping(fine_to_coarse(), also_valid=COCO_RAW_VALUES)


def open_cocostuff27(
    root: str | Path,
    split: str = "val",
    curated: bool | None = None,
    image_list: str = CURATED_LIST,
    skip_bad: bool = False,
) -> BenchmarkDataset:
    """COCO-Stuff-27: 12 thing + 15 stuff coarse classes, no background class; the curated images by default."""
    folder = split_alias(split, SPLITS, SPLITS.values())
    base = coco_root(root)
    list_path = base / "curated" / folder / image_list
    if curated or (curated is None and list_path.is_file()):
        names = read_split_list(list_path, "the curated COCO-Stuff image ids, from PiCIE or STEGO")
        subset = image_list
    else:
        if curated is None and (base / "curated").is_dir():
            raise UserError(f"{list_path}: no such curated list (curated=False evaluates every image instead)")
        names = [path.stem for path in list_files(base / "images" / folder, ".jpg", f"the COCO {folder} images")]
        subset = "all images"
    labels = base / "annotations" / folder
    samples = [Sample(name, base / "images" / folder / f"{name}.jpg", labels / f"{name}.png") for name in names]
    title = f"COCO-Stuff-27 {folder} ({subset})"
    return BenchmarkDataset(
        base,
        COCOSTUFF27_CLASSES,
        samples,
        COCOSTUFF27_DECODING,
        things=COCOSTUFF27_THINGS,
        title=title,
        skip_bad=skip_bad,
    )
