"""Cityscapes: label ids -> the 19 train ids by the official table, or the train-id PNGs where written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annofree.data.benchmarks.cityscapes import open_cityscapes
from annofree.errors import UserError
from tests.data.benchmarks.helpers import Fixture, assert_reads, by_hand, raw_label, write_image, write_label

# (city, name) -> (height, width, colour); sorted by name, as the reader gives them
VAL = {
    ("frankfurt", "frankfurt_000000_000294"): (6, 12, (128, 64, 128)),
    ("frankfurt", "frankfurt_000001_007973"): (5, 10, (70, 70, 70)),
    ("lindau", "lindau_000000_000019"): (8, 8, (107, 142, 35)),
}
# unlabeled, ego vehicle, ground, road, sidewalk, parking, building, guard rail, pole, polegroup, traffic sign,
# sky, person, car, caravan, trailer, train, bicycle
LABEL_IDS = [0, 1, 6, 7, 8, 9, 11, 14, 17, 18, 20, 23, 24, 26, 29, 30, 31, 33]
BY_HAND = {
    0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 9: 255, 11: 2, 14: 255, 17: 5, 18: 255, 20: 7, 23: 10, 24: 11, 26: 13,
    29: 255, 30: 255, 31: 16, 33: 18,
}  # fmt: skip
TRAIN_IDS = [0, 5, 11, 18, 255]  # in a *_labelTrainIds.png: already train ids


def make_cityscapes(tmp_path: Path) -> Fixture:
    root = tmp_path / "cityscapes"
    rng = np.random.default_rng(3)
    fixture = Fixture(root, open_cityscapes)
    for (city, name), (height, width, colour) in VAL.items():
        write_image(root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png", height, width, colour)
        labels = root / "gtFine" / "val" / city
        raw = raw_label(rng, height, width, LABEL_IDS)
        write_label(labels / f"{name}_gtFine_labelIds.png", raw)
        write_label(labels / f"{name}_gtFine_color.png", np.zeros((height, width)))  # the other gtFine files
        if name == "lindau_000000_000019":  # createTrainIdLabelImgs has run for this one
            raw = raw_label(rng, height, width, TRAIN_IDS)
            write_label(labels / f"{name}_gtFine_labelTrainIds.png", raw)
            fixture.expected[name] = (colour, raw)
        else:
            fixture.expected[name] = (colour, by_hand(raw, BY_HAND))
    return fixture


def test_cityscapes_maps_label_ids_to_the_19_train_ids(tmp_path):
    fixture = make_cityscapes(tmp_path)
    cityscapes = open_cityscapes(fixture.root)
    assert len(cityscapes.classes) == 19 and cityscapes.classes[0] == "road" and cityscapes.classes[-1] == "bicycle"
    assert cityscapes.classes[11] == "person" and cityscapes.classes[13] == "car"
    assert cityscapes.background is False
    assert cityscapes.things == {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}
    assert_reads(cityscapes, fixture)
    gt = fixture.root / "gtFine" / "val"
    assert cityscapes.label_path(0) == gt / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png"
    assert cityscapes.label_path(2) == gt / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png"
    assert cityscapes.image_path(2) == fixture.root / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"
    assert open_cityscapes(tmp_path).names == cityscapes.names  # the folder holding cityscapes/ works too


def test_ids_outside_the_table_are_an_error(tmp_path):
    fixture = make_cityscapes(tmp_path)
    label = fixture.root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    write_label(label, np.full((6, 12), 34))
    with pytest.raises(UserError, match=r"frankfurt_000000_000294_gtFine_labelIds\.png: values 34 do not occur"):
        open_cityscapes(fixture.root)[0]
    with pytest.raises(UserError, match=r"leftImg8bit/train: no such folder"):
        open_cityscapes(fixture.root, split="train")
