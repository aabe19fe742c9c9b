"""COCO-Object from COCO-Stuff-164k: things -> 1..80, stuff and unlabelled -> background; the converter."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree.data.benchmarks.coco import convert_coco_object, open_coco_object
from annofree.errors import UserError
from tests.data.benchmarks.helpers import Fixture, assert_reads, by_hand, raw_label, write_image, write_label

VAL = {
    "000000000139": (6, 8, (150, 100, 50)),
    "000000000285": (9, 5, (50, 100, 150)),
    "000000000632": (4, 4, (99, 9, 9)),
}
# raw COCO-Stuff values = COCO category id - 1
RAW_VALUES = [0, 2, 12, 24, 26, 89, 91, 156, 181, 255]
BY_HAND = {
    0: 1,  # person (id 1)
    2: 3,  # car (id 3)
    12: 12,  # stop sign (id 13; id 12 is unused, so the 12th object)
    24: 24,  # giraffe (id 25)
    26: 25,  # backpack (id 27; 26 hat is unused)
    89: 80,  # toothbrush (id 90), the last object
    91: 0,  # banner, stuff -> background
    156: 0,  # sky-other, stuff -> background
    181: 0,  # wood, the last stuff class -> background
    255: 0,  # unlabelled -> background, as GroupViT's converter does
}


def make_coco_object(tmp_path: Path) -> Fixture:
    root = tmp_path / "coco"
    rng = np.random.default_rng(4)
    fixture = Fixture(root, open_coco_object)
    for name, (height, width, colour) in VAL.items():
        write_image(root / "images" / "val2017" / f"{name}.jpg", height, width, colour)
        raw = raw_label(rng, height, width, RAW_VALUES)
        write_label(root / "annotations" / "val2017" / f"{name}.png", raw)
        write_label(root / "annotations" / "val2017" / f"{name}_labelTrainIds.png", raw)  # mmseg's, not an input
        fixture.expected[name] = (colour, by_hand(raw, BY_HAND))
    write_image(root / "images" / "train2017" / "000000000009.jpg", 3, 3, (1, 2, 3))
    return fixture


def test_coco_object_decodes_the_raw_labels(tmp_path):
    fixture = make_coco_object(tmp_path)
    coco = open_coco_object(fixture.root)
    assert len(coco.classes) == 81 and coco.classes[:3] == ["background", "person", "bicycle"]
    assert coco.classes[12] == "stop sign" and coco.classes[25] == "backpack" and coco.classes[-1] == "toothbrush"
    assert coco.background is True and coco.things is None
    assert_reads(coco, fixture)
    assert coco.label_path(0) == fixture.root / "annotations" / "val2017" / "000000000139.png"
    assert open_coco_object(tmp_path, split="val2017").names == list(VAL)  # coco/ found under the given root


def test_the_converter_writes_the_same_ids_once_and_the_reader_prefers_them(tmp_path, caplog):
    fixture = make_coco_object(tmp_path)
    labels = fixture.root / "annotations" / "val2017"
    (labels / "000000000776.png").write_bytes(b"not a png")  # an unreadable label among the good ones
    calls = []
    with caplog.at_level(logging.WARNING, logger="annofree.data.benchmarks.coco"):
        counts = convert_coco_object(fixture.root, progress=lambda done, total: calls.append((done, total)))
    assert counts == {"written": 3, "existing": 0, "bad": 1}
    assert calls[-1] == (4, 4) and len(calls) == 4
    assert "1 unreadable labels" in caplog.text and "000000000776.png" in caplog.text
    assert sorted(path.name for path in labels.glob("*_instanceTrainIds.png")) == [
        f"{name}_instanceTrainIds.png" for name in VAL
    ]
    assert not list(labels.glob(".*"))  # no temporary files left
    for name, (_, ids) in fixture.expected.items():
        with Image.open(labels / f"{name}_instanceTrainIds.png") as converted:
            assert converted.mode == "L"
            np.testing.assert_array_equal(np.array(converted), ids)

    coco = open_coco_object(fixture.root)
    assert coco.label_path(1) == labels / "000000000285_instanceTrainIds.png"
    assert_reads(coco, fixture)

    assert convert_coco_object(fixture.root, split="val")["written"] == 0  # existing outputs are kept
    assert convert_coco_object(fixture.root, force=True, workers=2)["written"] == 3


def test_the_converter_needs_raw_labels(tmp_path):
    fixture = make_coco_object(tmp_path)
    with pytest.raises(UserError, match=r"annotations/train2017: no such folder"):
        convert_coco_object(fixture.root, split="train2017")
    for path in (fixture.root / "annotations" / "val2017").glob("0*[0-9].png"):
        path.unlink()
    with pytest.raises(UserError, match=r"no raw COCO-Stuff label PNGs"):
        convert_coco_object(fixture.root)
    with pytest.raises(UserError, match=r"unknown split 'test2017'"):
        convert_coco_object(fixture.root, split="test2017")
