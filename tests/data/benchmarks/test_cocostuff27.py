"""COCO-Stuff-27: fine COCO-Stuff ids -> 12 thing and 15 stuff supercategories; the curated image list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annofree.data.benchmarks.cocostuff27 import fine_to_coarse, open_cocostuff27
from annofree.errors import UserError
from tests.data.benchmarks.helpers import Fixture, assert_reads, by_hand, raw_label, write_image, write_label

IMAGES = {
    "000000000139": (6, 7, (10, 120, 240)),
    "000000000285": (5, 8, (240, 120, 10)),
    "000000000632": (7, 5, (90, 90, 9)),
}
CURATED = ["000000000632", "000000000139"]  # the list's order, not sorted
# raw COCO-Stuff value (COCO category id - 1) -> coarse id, from the COCO-Stuff hierarchy
BY_HAND = {
    0: 9,  # person -> person
    2: 11,  # car -> vehicle
    51: 2,  # banana -> food (things)
    72: 0,  # laptop -> electronic
    89: 4,  # toothbrush -> indoor
    91: 17,  # banner -> textile
    97: 15,  # cabinet -> furniture-stuff
    100: 13,  # carpet -> floor
    101: 12,  # ceiling-other -> ceiling
    120: 14,  # food-other -> food-stuff
    148: 21,  # road -> ground
    156: 23,  # sky-other -> sky
    177: 26,  # water-other -> water
    181: 24,  # wood -> solid
    255: 255,  # unlabelled
}


def make_cocostuff27(tmp_path: Path, curated: bool = True) -> Fixture:
    root = tmp_path / "cocostuff"
    rng = np.random.default_rng(5)
    fixture = Fixture(root, open_cocostuff27)
    expected = {}
    for name, (height, width, colour) in IMAGES.items():
        write_image(root / "images" / "val2017" / f"{name}.jpg", height, width, colour)
        raw = raw_label(rng, height, width, list(BY_HAND))
        write_label(root / "annotations" / "val2017" / f"{name}.png", raw)
        expected[name] = (colour, by_hand(raw, BY_HAND))
    if curated:
        fixture.split_list = root / "curated" / "val2017" / "Coco164kFull_Stuff_Coarse_7.txt"
        fixture.split_list.parent.mkdir(parents=True)
        fixture.split_list.write_text("".join(f"{name}\n" for name in CURATED))
        fixture.expected = {name: expected[name] for name in CURATED}
    else:
        fixture.expected = expected
    return fixture


def test_cocostuff27_folds_fine_ids_into_things_and_stuff(tmp_path):
    fixture = make_cocostuff27(tmp_path)
    coco = open_cocostuff27(fixture.root)
    assert len(coco.classes) == len(set(coco.classes)) == 27
    assert coco.classes[:3] == ["electronic", "appliance", "food"] and coco.classes[-1] == "water"
    assert coco.classes[9] == "person" and coco.classes[12] == "ceiling" and coco.classes[14] == "food-stuff"
    assert coco.things == set(coco.classes[:12]) and coco.background is False
    assert "Coco164kFull_Stuff_Coarse_7.txt" in coco.title
    assert_reads(coco, fixture)
    assert open_cocostuff27(tmp_path).names == CURATED  # STEGO's data dir, holding cocostuff/


def test_the_fine_to_coarse_table_covers_every_fine_id():
    mapping = fine_to_coarse()
    assert sorted(mapping) == list(range(182))
    sizes = np.bincount(list(mapping.values()), minlength=27)
    # things: 91 fine ids (80 used), stuff: the 91 stuff classes
    assert sizes[:12].sum() == 91 and sizes[12:].sum() == 91
    assert sizes[12:].tolist() == [2, 6, 4, 11, 4, 11, 7, 2, 6, 11, 9, 2, 6, 5, 5]


def test_without_a_curated_list_every_image_is_used(tmp_path):
    fixture = make_cocostuff27(tmp_path, curated=False)
    coco = open_cocostuff27(fixture.root)
    assert "all images" in coco.title
    assert_reads(coco, fixture)
    with pytest.raises(UserError, match=r"curated/val2017/Coco164kFull_Stuff_Coarse_7\.txt: no such split list"):
        open_cocostuff27(fixture.root, curated=True)


def test_a_curated_folder_without_the_list_is_an_error_unless_asked_for_all(tmp_path):
    fixture = make_cocostuff27(tmp_path)
    fixture.split_list.rename(fixture.split_list.with_name("Coco164kFull_Stuff_Coarse.txt"))
    with pytest.raises(UserError, match=r"Coco164kFull_Stuff_Coarse_7\.txt: no such curated list"):
        open_cocostuff27(fixture.root)
    assert open_cocostuff27(fixture.root, curated=False).names == list(IMAGES)
    assert open_cocostuff27(fixture.root, image_list="Coco164kFull_Stuff_Coarse.txt").names == CURATED
