"""ADE20K: every image of the split, 0 = "other" ignored and the 150 ids shifted down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annofree.data.benchmarks.ade20k import ADE20K_CLASSES, open_ade20k
from annofree.errors import UserError
from tests.data.benchmarks.helpers import Fixture, assert_reads, by_hand, raw_label, write_image, write_label

VAL = {"ADE_val_00000001": (6, 5, (70, 140, 210)), "ADE_val_00000002": (4, 9, (210, 140, 70))}
RAW_VALUES = [0, 1, 8, 13, 150]  # other, wall, bed, person, flag
BY_HAND = {0: 255, 1: 0, 8: 7, 13: 12, 150: 149}


def make_ade20k(tmp_path: Path) -> Fixture:
    root = tmp_path / "data"
    base = root / "ADEChallengeData2016"
    rng = np.random.default_rng(2)
    fixture = Fixture(root, open_ade20k)
    for name, (height, width, colour) in VAL.items():
        write_image(base / "images" / "validation" / f"{name}.jpg", height, width, colour)
        raw = raw_label(rng, height, width, RAW_VALUES)
        write_label(base / "annotations" / "validation" / f"{name}.png", raw)
        fixture.expected[name] = (colour, by_hand(raw, BY_HAND))
    write_image(base / "images" / "training" / "ADE_train_00000001.jpg", 3, 4, (9, 9, 9))
    write_label(base / "annotations" / "training" / "ADE_train_00000001.png", np.zeros((3, 4)))
    return fixture


def test_ade20k_reads_150_classes_with_other_ignored(tmp_path):
    fixture = make_ade20k(tmp_path)
    ade = open_ade20k(fixture.root)
    assert len(ade.classes) == len(set(ade.classes)) == 150
    assert ade.classes[0] == "wall" and ade.classes[7] == "bed" and ade.classes[12] == "person"
    assert ade.classes[-1] == "flag" and all(name == name.strip() for name in ade.classes)
    assert ade.background is False and ade.things is None
    assert_reads(ade, fixture)
    assert ade.image_path(0) == fixture.root / "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg"


def test_splits_and_roots(tmp_path):
    fixture = make_ade20k(tmp_path)
    base = fixture.root / "ADEChallengeData2016"
    assert open_ade20k(base, split="validation").names == list(VAL)
    train = open_ade20k(fixture.root, split="train")
    assert train.names == ["ADE_train_00000001"] and (train[0][2] == 255).all()
    with pytest.raises(UserError, match=r"unknown split 'test' \(choose one of: train, training, val, validation\)"):
        open_ade20k(fixture.root, split="test")
    for path in (base / "images" / "training").iterdir():
        path.unlink()
    with pytest.raises(UserError, match=r"images/training: no \*\.jpg files"):
        open_ade20k(fixture.root, split="training")
    assert tuple(ADE20K_CLASSES[:3]) == ("wall", "building", "sky")
