"""The data sets by command-line name, the generic folder among them."""

from __future__ import annotations

import numpy as np
import pytest

from annofree.data.benchmarks import DATASETS, open_dataset
from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.errors import UserError
from tests.data.benchmarks.helpers import assert_reads
from tests.data.benchmarks.test_voc import make_voc


def test_the_names_the_command_line_offers():
    assert list(DATASETS) == [
        "voc", "voc20", "context60", "context59", "coco-object", "cocostuff27", "ade20k", "cityscapes", "folder"
    ]  # fmt: skip


def test_open_dataset_passes_the_split_and_options(tmp_path):
    fixture = make_voc(tmp_path, background=False)
    voc20 = open_dataset("voc20", fixture.root)
    assert len(voc20.classes) == 20
    assert_reads(voc20, fixture)
    assert open_dataset("voc", fixture.root, split="train").names == ["2007_000032"]
    assert open_dataset("voc", fixture.root, skip_bad=True).skipped == []
    with pytest.raises(
        UserError, match=r"unknown data set 'pascal' \(choose one of: voc, voc20, context60, .*folder\)"
    ):
        open_dataset("pascal", fixture.root)


def test_the_generic_folder_gets_the_same_interface(tmp_path):
    write_classes(tmp_path / "val", ["background", "cat"])
    label = np.array([[0, 1, 255], [1, 1, 0]], dtype=np.uint8)
    write_segmentation_sample(tmp_path / "val", "a", np.zeros((2, 3, 3), dtype=np.uint8), label)
    folder = open_dataset("folder", tmp_path, split="val")
    assert folder.classes == ["background", "cat"] and folder.background is True and folder.things is None
    assert folder.names == ["a"] and folder.label_path(0) == tmp_path / "val" / "labels" / "a.png"
    np.testing.assert_array_equal(folder[0][2], label)
    assert open_dataset("folder", tmp_path / "val", background=False).background is False

    write_classes(tmp_path / "val", ["cat", "dog", "bird"])
    assert open_dataset("folder", tmp_path / "val").background is False
    write_segmentation_sample(
        tmp_path / "val",
        "b",
        np.zeros((2, 3, 3), dtype=np.uint8),
        np.where(label < 255, label + 5, label).astype(np.uint8),
    )
    lenient = open_dataset("folder", tmp_path / "val", skip_bad=True)
    assert lenient.names == ["a"] and [name for name, _ in lenient.skipped] == ["b"]
    with pytest.raises(UserError, match=r"b\.png: values 5, 6 do not occur"):
        open_dataset("folder", tmp_path / "val")[1]
