"""Protocol records and the unsupervised resize + centre crop."""

from __future__ import annotations

import numpy as np
import pytest

from annofree.errors import UserError
from annofree.evaluation.protocols import (
    UnsupervisedProtocol,
    center_crop,
    zero_shot_protocol,
)


def test_reference_thresholds_and_prompt_names():
    assert zero_shot_protocol("voc").bg_thresh == 0.95
    assert zero_shot_protocol("context59").bg_thresh == 0.35
    assert zero_shot_protocol("coco-object").bg_thresh == 0.95
    voc = zero_shot_protocol("voc")
    assert voc.queries(["aeroplane", "diningtable", "pottedplant", "tvmonitor"]) == [
        "aeroplane",
        "table",
        "plant",
        "monitor",
    ]
    assert zero_shot_protocol("context60").queries(["aeroplane", "tvmonitor"]) == ["airplane", "monitor"]
    options = voc.segmenter_options()
    assert (options["mode"], options["window"], options["stride"], options["short_side"]) == ("slide", 448, 224, 448)
    assert voc.with_overrides(bg_thresh=0.5, mode=None).segmenter_options()["mode"] == "slide"


def test_unsupervised_view_resizes_the_short_side_and_crops_the_centre():
    label = np.zeros((200, 400), dtype=np.uint8)
    label[:, 200:] = 7  # right half
    label[0, 0] = 255
    image = np.stack([label] * 3, axis=-1)
    out_image, out_label = UnsupervisedProtocol(short_side=100, crop=100).apply(image, label)
    assert out_image.shape == (100, 100, 3) and out_label.shape == (100, 100)
    # 400 wide -> 200 after the resize; the central 100 columns are 50..149, the boundary at 100.
    assert (out_label[:, :50] == 0).all() and (out_label[:, 50:] == 7).all()
    assert set(np.unique(out_label)) <= {0, 7, 255}  # nearest: no new ids


def test_center_crop_of_a_short_array_keeps_what_there_is():
    array = np.arange(30).reshape(5, 6)
    assert center_crop(array, 4).tolist() == array[0:4, 1:5].tolist()
    assert center_crop(array, 10).shape == (5, 6)


def test_mismatched_label_is_refused():
    with pytest.raises(UserError, match="label size"):
        UnsupervisedProtocol().apply(np.zeros((10, 10, 3), np.uint8), np.zeros((9, 10), np.uint8))
