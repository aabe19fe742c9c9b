"""Protocol records and the unsupervised resize + centre crop."""

from __future__ import annotations

import numpy as np
import pytest

from annofree.data.benchmarks.coco import COCO_OBJECT_CLASSES
from annofree.data.benchmarks.context import CONTEXT60_CLASSES
from annofree.data.benchmarks.voc import VOC_CLASSES
from annofree.data.captions import TEMPLATE_SETS
from annofree.errors import UserError
from annofree.evaluation.protocols import (
    CLASSIFICATION_PROTOCOL,
    ZERO_SHOT_PROTOCOLS,
    UnsupervisedProtocol,
    ZeroShotProtocol,
    center_crop,
    zero_shot_protocol,
)
from annofree.inference.zero_shot import ZeroShotSegmenter

# The official values, copied from NVlabs/GroupViT: segmentation/datasets/{pascal_voc,pascal_context,coco_object}.py
# (CLASSES: what is prompted), segmentation/configs/_base_/datasets/*.py (test_cfg bg_thresh, mode, crop_size,
# stride; test_pipeline img_scale), configs/default.yml (evaluate.seg.template: simple, evaluate.cls.template:
# subset) and datasets/imagenet_template.py (the sets).
OFFICIAL_VOC = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
    "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor",
)  # fmt: skip
OFFICIAL_CONTEXT = (
    "background", "airplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light",
    "motorbike", "mountain", "mouse", "person", "plate", "platform", "plant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "monitor", "wall",
    "water", "window", "wood",
)  # fmt: skip
OFFICIAL_COCO_OBJECT = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
OFFICIAL_BG_THRESH = {"voc": 0.95, "voc20": 0.95, "context60": 0.35, "context59": 0.35, "coco-object": 0.95}
OFFICIAL_SUBSET = (
    "itap of a {}.", "a bad photo of a {}.", "a origami {}.", "a photo of the large {}.", "a {} in a video game.",
    "art of the {}.", "a photo of the small {}.",
)  # fmt: skip


def test_reference_thresholds_and_prompt_names():
    assert zero_shot_protocol("voc").settings.bg_thresh == 0.95
    assert zero_shot_protocol("context59").settings.bg_thresh == 0.35
    assert zero_shot_protocol("coco-object").settings.bg_thresh == 0.95
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


@pytest.mark.parametrize(
    ("names", "classes", "official"),
    [
        (("voc", "voc20"), VOC_CLASSES, OFFICIAL_VOC),
        (("context60", "context59"), CONTEXT60_CLASSES, OFFICIAL_CONTEXT),
        (("coco-object",), COCO_OBJECT_CLASSES, OFFICIAL_COCO_OBJECT),
    ],
)
def test_the_table_prompts_the_official_class_names_with_the_official_thresholds(names, classes, official):
    for name in names:
        protocol = ZERO_SHOT_PROTOCOLS[name]
        assert tuple(protocol.queries(classes)) == official
        assert protocol.settings.bg_thresh == OFFICIAL_BG_THRESH[name]
        assert protocol.prompt_templates() == ["a photo of a {}."]  # evaluate.seg.template: simple


def test_every_benchmark_protocol_is_the_official_image_pipeline():
    for name, protocol in ZERO_SHOT_PROTOCOLS.items():
        assert protocol.name == name
        # img_scale=(2048, 448), keep_ratio, OpenCV bilinear; slide crop 448 stride 224; patch conv remainder.
        settings = protocol.settings
        assert (settings.short_side, settings.max_long_side, settings.resize) == (448, 2048, "official")
        assert settings.patch_remainder == "drop" and protocol.templates == "simple"
        assert (settings.window, settings.stride, settings.topk, settings.flip) == (448, 224, 5, False)
        assert settings.mode == ("whole" if name == "folder" else "slide")
    assert set(ZERO_SHOT_PROTOCOLS) >= set(OFFICIAL_BG_THRESH)
    assert zero_shot_protocol("unknown") == ZeroShotProtocol("unknown")


def test_imagenet_uses_the_official_subset_of_seven_templates():
    assert CLASSIFICATION_PROTOCOL.templates == "subset"
    assert tuple(CLASSIFICATION_PROTOCOL.prompt_templates()) == OFFICIAL_SUBSET == TEMPLATE_SETS["subset"]
    assert len(TEMPLATE_SETS["full"]) == 80 and CLASSIFICATION_PROTOCOL.resize_ratio == 256 / 224


def test_segmenter_options_are_segmenter_keywords_and_its_defaults_are_annofrees_own():
    import inspect

    from annofree.inference.settings import DEFAULTS, ZeroShotSettings

    assert "options" in inspect.signature(ZeroShotSegmenter).parameters  # the settings, as keywords
    options = ZeroShotProtocol("x").segmenter_options()
    assert set(options) <= set(ZeroShotSettings.field_names())
    # For users' photos annofree antialiases when shrinking, does not cap the long side and fits the patch grid.
    defaults = {key: getattr(DEFAULTS, key) for key in ("resize", "max_long_side", "patch_remainder")}
    assert defaults == {"resize": "antialias", "max_long_side": None, "patch_remainder": "fit"}
    with pytest.raises(UserError, match="unknown template set"):
        ZeroShotProtocol("x", templates="many").prompt_templates()


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
