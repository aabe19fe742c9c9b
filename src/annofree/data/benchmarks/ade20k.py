"""ADE20K (the SceneParsing challenge release, 150 classes), as distributed::

    ADEChallengeData2016/
      images/{training,validation}/ADE_val_00000001.jpg
      annotations/{training,validation}/ADE_val_00000001.png   8-bit: 0 = "other" (not one of the 150),
                                                                1..150 = the classes

``root`` may be ADEChallengeData2016 or the folder holding it; ``split`` is ``val``/``validation`` or
``train``/``training``. Every image of the split is used (there is no split list). As in mmsegmentation's
``ADE20KDataset`` (``reduce_zero_label``), 0 is ignored and 1..150 become ids 0..149. Class names and order
as mmseg's (whose ``'bed '`` carries a stray trailing space, dropped here).
"""

from __future__ import annotations

from pathlib import Path

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample, find_root, list_files, split_alias

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
ADE20K_LAYOUT = "ADEChallengeData2016/{images,annotations}/{training,validation}"
SPLITS = {"val": "validation", "train": "training"}


def open_ade20k(root: str | Path, split: str = "val", skip_bad: bool = False) -> BenchmarkDataset:
    """ADE20K, 150 classes, no background class."""
    folder = split_alias(split, SPLITS, SPLITS.values())
    base = find_root(root, ["ADEChallengeData2016", ""], ["images", "annotations"], ADE20K_LAYOUT)
    images = list_files(base / "images" / folder, ".jpg", f"the ADE20K {folder} images")
    samples = [Sample(path.stem, path, base / "annotations" / folder / f"{path.stem}.png") for path in images]
    title = f"ADE20K {folder} (150 classes)"
    return BenchmarkDataset(
        base, ADE20K_CLASSES, samples, LabelDecoding.reduce_zero(150), title=title, skip_bad=skip_bad
    )
