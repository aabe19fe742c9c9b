"""PASCAL Context as mmseg prepares it: Context60 (0 = background) and Context59 (background ignored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annofree.data.benchmarks.context import CONTEXT59_CLASSES, open_context, open_context59
from annofree.errors import UserError
from tests.data.benchmarks.helpers import Fixture, assert_reads, by_hand, raw_label, write_image, write_label

VAL = {"2008_000002": (5, 9, (180, 60, 20)), "2008_000003": (8, 6, (20, 160, 90))}
RAW_VALUES = [0, 1, 2, 37, 59]  # background, aeroplane, bag, person, wood
CONTEXT60_BY_HAND = {0: 0, 1: 1, 2: 2, 37: 37, 59: 59}
CONTEXT59_BY_HAND = {0: 255, 1: 0, 2: 1, 37: 36, 59: 58}


def make_context(tmp_path: Path, background: bool = True) -> Fixture:
    root = tmp_path / "data"
    base = root / "VOCdevkit" / "VOC2010"
    rng = np.random.default_rng(1)
    fixture = Fixture(root, lambda r, **kw: open_context(r, background=background, **kw))
    for name, (height, width, colour) in VAL.items():
        write_image(base / "JPEGImages" / f"{name}.jpg", height, width, colour)
        raw = raw_label(rng, height, width, RAW_VALUES)
        write_label(base / "SegmentationClassContext" / f"{name}.png", raw)
        fixture.expected[name] = (colour, by_hand(raw, CONTEXT60_BY_HAND if background else CONTEXT59_BY_HAND))
    write_image(base / "JPEGImages" / "2008_000007.jpg", 3, 3, (0, 0, 0))  # a VOC2010 photo outside the split
    lists = base / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_text("".join(f"{name}\n" for name in VAL) + "\n")  # trailing blank line
    fixture.split_list = lists / "val.txt"
    return fixture


def test_context60_keeps_background_as_class_0(tmp_path):
    fixture = make_context(tmp_path)
    context = open_context(fixture.root)
    assert len(context.classes) == 60 and context.classes[:3] == ["background", "aeroplane", "bag"]
    assert context.classes[37] == "person" and context.classes[-1] == "wood"
    assert context.background is True and context.things is None
    assert_reads(context, fixture)


def test_context59_ignores_background_and_shifts_the_ids(tmp_path):
    fixture = make_context(tmp_path, background=False)
    context = open_context59(fixture.root)
    assert context.classes == list(CONTEXT59_CLASSES) and len(context.classes) == 59
    assert context.classes[0] == "aeroplane" and context.classes[36] == "person" and context.classes[-1] == "wood"
    assert context.background is False
    assert_reads(context, fixture)


@pytest.mark.parametrize("level", ["", "VOCdevkit", "VOCdevkit/VOC2010"])
def test_the_root_may_be_any_level_of_the_tree(tmp_path, level):
    fixture = make_context(tmp_path)
    context = open_context(fixture.root / level if level else fixture.root)
    assert context.names == list(VAL)
    assert context.label_path(0) == fixture.root / "VOCdevkit/VOC2010/SegmentationClassContext/2008_000002.png"


def test_a_voc2012_tree_is_not_a_context_tree(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(UserError, match=r"not a VOCdevkit/VOC2010/.* tree \(no JPEGImages, SegmentationClassContext"):
        open_context(tmp_path)
