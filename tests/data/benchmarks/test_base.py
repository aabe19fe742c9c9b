"""The shared pieces: label decodings, and the bad-input behaviour every reader inherits."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from PIL import Image

from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample
from annofree.errors import UserError
from tests.data.benchmarks.test_ade20k import make_ade20k
from tests.data.benchmarks.test_cityscapes import make_cityscapes
from tests.data.benchmarks.test_coco import make_coco_object
from tests.data.benchmarks.test_cocostuff27 import make_cocostuff27
from tests.data.benchmarks.test_context import make_context
from tests.data.benchmarks.test_voc import make_voc


def test_decodings(tmp_path):
    raw = np.array([[0, 1, 2], [3, 255, 0]], dtype=np.uint8)
    identity = LabelDecoding.identity(4)
    np.testing.assert_array_equal(identity(raw, tmp_path), raw)
    reduce_zero = LabelDecoding.reduce_zero(3)
    np.testing.assert_array_equal(reduce_zero(raw, tmp_path), [[255, 0, 1], [2, 255, 255]])
    mapped = LabelDecoding.from_mapping({3: 0, 1: 1}, also_valid=(0, 2))
    np.testing.assert_array_equal(mapped(raw, tmp_path), [[255, 1, 255], [0, 255, 255]])
    with pytest.raises(UserError, match=r"x\.png: values 3 do not occur"):
        LabelDecoding.identity(3)(raw, tmp_path / "x.png")
    with pytest.raises(ValueError, match="bad entry"):
        LabelDecoding.from_mapping({300: 0})
    with pytest.raises(ValueError, match="table must be uint8"):
        LabelDecoding(np.zeros(255, dtype=np.uint8), np.zeros(256, dtype=bool))


def test_a_dataset_checks_its_classes_against_the_decoding(tmp_path):
    sample = [Sample("a", tmp_path / "a.jpg", tmp_path / "a.png")]
    with pytest.raises(ValueError, match="beyond the 2 classes"):
        BenchmarkDataset(tmp_path, ["a", "b"], sample, LabelDecoding.identity(3))
    with pytest.raises(ValueError, match="distinct class names"):
        BenchmarkDataset(tmp_path, ["a", "a"], sample, LabelDecoding.identity(2))
    with pytest.raises(ValueError, match=r"things \['c'\] are not classes"):
        BenchmarkDataset(tmp_path, ["a", "b"], sample, LabelDecoding.identity(2), things=["c"])


def test_a_name_listed_twice_is_a_problem(tmp_path):
    fixture = make_voc(tmp_path)
    fixture.split_list.write_text("2007_000033\n2007_000042\n2007_000033\n")
    with pytest.raises(UserError, match=r"'2007_000033' is listed twice"):
        fixture.open(fixture.root)
    voc = fixture.open(fixture.root, skip_bad=True)
    assert voc.names == ["2007_000033", "2007_000042"] and len(voc.skipped) == 1


# ------------------------------------------------------------------------------- every reader, bad input

READERS = [make_voc, make_context, make_ade20k, make_cityscapes, make_coco_object, make_cocostuff27]
LISTED = [make_voc, make_context, make_cocostuff27]


@pytest.mark.parametrize("make", READERS, ids=[make.__name__[5:] for make in READERS])
def test_an_image_without_its_label_is_an_error_or_skipped(tmp_path, make, caplog):
    fixture = make(tmp_path)
    dataset = fixture.open(fixture.root)
    image, label = dataset.image_path(1), dataset.label_path(1)
    label.unlink()
    with pytest.raises(UserError, match=rf"{re.escape(str(image))}: no label .*{re.escape(label.name)}"):
        fixture.open(fixture.root)
    with caplog.at_level(logging.WARNING, logger="annofree.data.benchmarks.base"):
        lenient = fixture.open(fixture.root, skip_bad=True)
    assert "skipped 1 bad pairs" in caplog.text
    assert lenient.names == [name for name in fixture.expected if name != dataset.names[1]]
    assert [name for name, _ in lenient.skipped] == [dataset.names[1]]


@pytest.mark.parametrize("make", READERS, ids=[make.__name__[5:] for make in READERS])
def test_a_label_of_the_wrong_size_is_an_error_when_read_or_skipped(tmp_path, make):
    fixture = make(tmp_path)
    label = fixture.open(fixture.root).label_path(1)
    with Image.open(label) as original:
        width, height = original.size
        original.crop((0, 0, width - 1, height)).save(label)  # keeps the mode (and a palette)
    strict = fixture.open(fixture.root)  # contents are checked when read
    assert strict[0][0] == strict.names[0]
    message = rf"{re.escape(str(label))}: label is {width - 1}x{height} \(WxH\) but its image .* is {width}x{height}"
    with pytest.raises(UserError, match=message):
        strict[1]
    with pytest.raises(UserError, match=message):
        strict.check()
    lenient = fixture.open(fixture.root, skip_bad=True)
    assert len(lenient) == len(fixture.expected) - 1 and [name for name, _ in lenient.skipped] == [strict.names[1]]
    lenient.check()


@pytest.mark.parametrize("make", READERS, ids=[make.__name__[5:] for make in READERS])
def test_a_value_the_data_set_never_uses_is_an_error(tmp_path, make):
    fixture = make(tmp_path)
    label = fixture.open(fixture.root).label_path(0)
    with Image.open(label) as original:
        ids = np.array(original)
        ids[0, 0] = 254  # no data set here uses raw 254
        changed = Image.frombytes(original.mode, original.size, ids.tobytes())
        if original.mode == "P":
            changed.putpalette(original.getpalette())
    changed.save(label)
    with pytest.raises(UserError, match=rf"{re.escape(str(label))}: values 254 do not occur"):
        fixture.open(fixture.root)[0]
    assert len(fixture.open(fixture.root, skip_bad=True).skipped) == 1


@pytest.mark.parametrize("make", LISTED, ids=[make.__name__[5:] for make in LISTED])
@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_missing_split_list_is_always_an_error(tmp_path, make, skip_bad):
    fixture = make(tmp_path)
    fixture.split_list.unlink()
    opener = fixture.open
    if make is make_cocostuff27:
        opener = lambda root, **kw: fixture.open(root, curated=True, **kw)
    with pytest.raises(UserError, match=rf"{re.escape(str(fixture.split_list))}: no such split list"):
        opener(fixture.root, skip_bad=skip_bad)


def test_a_split_left_without_pairs_is_an_error(tmp_path):
    fixture = make_ade20k(tmp_path)
    for path in (fixture.root / "ADEChallengeData2016" / "annotations" / "validation").iterdir():
        path.unlink()
    with pytest.raises(UserError, match=r"no image/label pairs for ADE20K validation .*\(2 bad pairs skipped\)"):
        fixture.open(fixture.root, skip_bad=True)
