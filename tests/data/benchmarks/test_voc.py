"""PASCAL VOC 2012: palette labels read as ids, the 255 border ignored, VOC21 and VOC20, any root level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree.data.benchmarks.voc import VOC_CLASSES, open_voc, open_voc20, voc_palette
from annofree.errors import UserError
from tests.data.benchmarks.helpers import Fixture, assert_reads, by_hand, raw_label, write_image, write_label

# name -> (height, width, colour); val.txt lists them in this order
VAL = {"2007_000033": (6, 8, (200, 30, 30)), "2007_000042": (5, 7, (30, 200, 30)), "2007_000061": (7, 4, (30, 30, 200))}
RAW_VALUES = [0, 1, 15, 20, 255]  # background, aeroplane, person, tvmonitor, the void border
VOC21_BY_HAND = {0: 0, 1: 1, 15: 15, 20: 20, 255: 255}
VOC20_BY_HAND = {0: 255, 1: 0, 15: 14, 20: 19, 255: 255}


def make_voc(tmp_path: Path, background: bool = True) -> Fixture:
    root = tmp_path / "data"
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    fixture = Fixture(root, lambda r, **kw: open_voc(r, background=background, **kw))
    for name, (height, width, colour) in {**VAL, "2007_000032": (4, 4, (90, 90, 90))}.items():
        write_image(base / "JPEGImages" / f"{name}.jpg", height, width, colour)
        raw = raw_label(rng, height, width, RAW_VALUES)
        write_label(base / "SegmentationClass" / f"{name}.png", raw, palette=voc_palette())
        if name in VAL:
            fixture.expected[name] = (colour, by_hand(raw, VOC21_BY_HAND if background else VOC20_BY_HAND))
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_text("".join(f"{name}\n" for name in VAL))
    (lists / "train.txt").write_text("2007_000032\n")
    fixture.split_list = lists / "val.txt"
    return fixture


def test_voc21_reads_palette_indices_with_the_border_ignored(tmp_path):
    fixture = make_voc(tmp_path)
    voc = open_voc(fixture.root)
    assert len(voc.classes) == 21 and voc.classes[0] == "background" and voc.classes[-1] == "tvmonitor"
    assert voc.classes[15] == "person" and voc.classes[11] == "diningtable"
    assert voc.background is True and voc.things is None
    assert "21 classes" in voc.title
    with Image.open(voc.label_path(0)) as label:
        assert label.mode == "P" and tuple(label.getpalette()[15 * 3 : 16 * 3]) == (192, 128, 128)
    assert_reads(voc, fixture)


def test_voc20_ignores_background_and_shifts_the_objects_down(tmp_path):
    fixture = make_voc(tmp_path, background=False)
    voc20 = open_voc20(fixture.root)
    assert voc20.classes == list(VOC_CLASSES[1:]) and len(voc20.classes) == 20
    assert voc20.classes[0] == "aeroplane" and voc20.classes[14] == "person"
    assert voc20.background is False and voc20.things is None
    assert_reads(voc20, fixture)


@pytest.mark.parametrize("level", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_the_root_may_be_any_level_of_the_tree(tmp_path, level):
    fixture = make_voc(tmp_path)
    voc = open_voc(fixture.root / level if level else fixture.root)
    base = fixture.root / "VOCdevkit" / "VOC2012"
    assert voc.names == list(VAL)
    assert voc.image_path(1) == base / "JPEGImages" / "2007_000042.jpg"
    assert voc.label_path(1) == base / "SegmentationClass" / "2007_000042.png"


def test_the_split_list_chooses_the_images(tmp_path):
    fixture = make_voc(tmp_path)
    assert open_voc(fixture.root, split="train").names == ["2007_000032"]
    with pytest.raises(UserError, match=r"ImageSets/Segmentation/trainval\.txt: no such split list"):
        open_voc(fixture.root, split="trainval")
    with pytest.raises(UserError, match=r"not a VOCdevkit/VOC2012"):
        open_voc(tmp_path)  # a folder without the tree


def test_the_voc_palette_is_the_official_colour_map():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128), 8: (64, 0, 0)}
    known |= {15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    for index, colour in known.items():
        assert tuple(palette[index]) == colour, index
