"""The published evaluation protocols: one table, one record per benchmark.

Zero-shot segmentation (GroupViT, as NVlabs/GroupViT evaluates it with mmseg 0.18), reproduced exactly by
default: the uint8 image is resized as mmseg's ``Resize(img_scale=(2048, 448), keep_ratio=True)`` does (short
side 448, unless the long side would pass 2048; OpenCV's bilinear without antialiasing, rounded to uint8:
``resize="official"``); ImageNet mean and std (the model's own statistics); sliding windows of 448 with stride
224; a crop side that is not a multiple of the patch loses its right and bottom remainder to the patch
convolution and the grouping maps are stretched over the whole crop (``patch_remainder="drop"``); one prompt,
"a photo of a {}." (template set "simple"); top-5 image-level filter; the background thresholds of the
reference configs (VOC 0.95, Context 0.35, COCO-Object 0.95). Class names are edited for prompting as the
reference's data set classes do ("diningtable" -> "table", ...); the reported class names stay the data set's
own. ``annofree segment`` keeps annofree's own choices for users' photos instead (``ZeroShotSegmenter``'s
defaults: antialiasing when shrinking, no long-side cap, crops resized to fit the patch grid).

Data sets with a background class are scored twice from the same pass: with background (VOC21, Context60;
background predicted by the threshold) and without (VOC20, Context59; background pixels ignored, every pixel
predicted among the objects).

Zero-shot classification (ImageNet, GroupViT's ``evaluate.cls``): the 7-template "subset" ensemble, the class
embedding being the normalised mean of the prompts' un-normalised embeddings; the short side resized bilinearly
to 256/224 of the input size (the long side truncated), then the central crop.

Unsupervised (DenseSiam, PiCIE/STEGO style): short side 320, centre crop 320 (image bilinear, label nearest),
clusters matched to classes by the Hungarian algorithm; pixel accuracy, mIoU, things/stuff by true class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from annofree.data.captions import TEMPLATE_SETS
from annofree.errors import UserError

# The reference's prompting names (NVlabs/GroupViT segmentation/datasets/*.py) for mmseg's class names.
VOC_PROMPT_NAMES = {"diningtable": "table", "pottedplant": "plant", "tvmonitor": "monitor"}
CONTEXT_PROMPT_NAMES = {"aeroplane": "airplane", "pottedplant": "plant", "tvmonitor": "monitor"}


@dataclass(frozen=True)
class ZeroShotProtocol:
    """How a zero-shot segmenter is run on one benchmark; the defaults are the official pipeline's.

    The fields from ``bg_thresh`` on (less ``prompt_names`` and ``templates``) are keyword arguments of
    ``ZeroShotSegmenter`` of the same names (``segmenter_options``); ``templates`` names a template set of
    ``annofree.data.captions.TEMPLATE_SETS``.
    """

    name: str
    bg_thresh: float = 0.95
    prompt_names: Mapping[str, str] = field(default_factory=dict)  # data set name -> prompted name
    short_side: int | None = 448
    mode: str = "slide"
    window: int = 448
    stride: int = 224
    topk: int | None = 5
    bg_rule: str = "affinity"  # the reference's; "similarity" thresholds the cosine (ZeroShotSegmenter)
    flip: bool = False  # average with the mirrored image (not in the reference's protocol)
    templates: str = "simple"  # "a photo of a {}."
    max_long_side: int | None = 2048  # mmseg's img_scale=(2048, 448): the long side never passes 2048
    resize: str = "official"  # OpenCV's bilinear on the uint8 image, no antialiasing (ZeroShotSegmenter)
    patch_remainder: str = "drop"  # the patch convolution drops it; maps stretched over the crop

    def segmenter_options(self) -> dict[str, Any]:
        return {
            "bg_thresh": self.bg_thresh,
            "bg_rule": self.bg_rule,
            "flip": self.flip,
            "short_side": self.short_side,
            "max_long_side": self.max_long_side,
            "resize": self.resize,
            "patch_remainder": self.patch_remainder,
            "mode": self.mode,
            "window": self.window,
            "stride": self.stride,
            "topk": self.topk,
        }

    def prompt_templates(self) -> list[str]:
        """The prompt templates of the protocol's template set."""
        if self.templates not in TEMPLATE_SETS:
            raise UserError(f"unknown template set {self.templates!r} (use one of {', '.join(TEMPLATE_SETS)})")
        return list(TEMPLATE_SETS[self.templates])

    def queries(self, class_names: Sequence[str]) -> list[str]:
        """The text queries for ``class_names`` (the data set's names with the reference's edits)."""
        return [self.prompt_names.get(name, name) for name in class_names]

    def with_overrides(self, **overrides: Any) -> ZeroShotProtocol:
        """A copy with the given fields changed (``None`` values keep the protocol's)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# The one table: every benchmark's prompt names, background threshold and template set (tests/evaluation/
# test_protocols.py states the official values beside it).
ZERO_SHOT_PROTOCOLS: dict[str, ZeroShotProtocol] = {
    "voc": ZeroShotProtocol("voc", bg_thresh=0.95, prompt_names=VOC_PROMPT_NAMES),
    "voc20": ZeroShotProtocol("voc20", bg_thresh=0.95, prompt_names=VOC_PROMPT_NAMES),
    "context60": ZeroShotProtocol("context60", bg_thresh=0.35, prompt_names=CONTEXT_PROMPT_NAMES),
    "context59": ZeroShotProtocol("context59", bg_thresh=0.35, prompt_names=CONTEXT_PROMPT_NAMES),
    "coco-object": ZeroShotProtocol("coco-object", bg_thresh=0.95),
    "ade20k": ZeroShotProtocol("ade20k"),
    "cityscapes": ZeroShotProtocol("cityscapes"),
    "cocostuff27": ZeroShotProtocol("cocostuff27"),
    # A segmentation folder of one's own: whole images (the rest as the benchmarks).
    "folder": ZeroShotProtocol("folder", mode="whole"),
}


def zero_shot_protocol(dataset: str) -> ZeroShotProtocol:
    """The protocol of a benchmark (or of ``"folder"``); another name gets the defaults."""
    return ZERO_SHOT_PROTOCOLS.get(dataset, ZeroShotProtocol(dataset))


@dataclass(frozen=True)
class ClassificationProtocol:
    """Zero-shot classification as GroupViT's ``evaluate.cls`` (ImageNet): template set and validation view."""

    templates: str = "subset"  # 7 templates
    resize_ratio: float = 256 / 224  # short side int(ratio * input size), bilinear, then the central crop

    def prompt_templates(self) -> list[str]:
        return list(TEMPLATE_SETS[self.templates])


CLASSIFICATION_PROTOCOL = ClassificationProtocol()


@dataclass(frozen=True)
class UnsupervisedProtocol:
    """Short-side resize then centre crop, applied to image and label alike before clustering."""

    short_side: int = 320
    crop: int | None = 320

    def apply(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image ``[H, W, 3]`` and label ``[H, W]`` -> the protocol's view of both (label by nearest)."""
        if image.shape[:2] != label.shape[:2]:
            raise UserError(f"label size {label.shape[:2]} differs from image size {image.shape[:2]}")
        height, width = label.shape[:2]
        scale = self.short_side / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
        label = np.array(Image.fromarray(label).resize(size, Image.NEAREST))
        if self.crop is None:
            return image, label
        return center_crop(image, self.crop), center_crop(label, self.crop)


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` part (the whole side where it is shorter)."""
    height, width = array.shape[:2]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return array[top : top + size, left : left + size]


UNSUPERVISED_PROTOCOL = UnsupervisedProtocol()

__all__ = [
    "CLASSIFICATION_PROTOCOL",
    "CONTEXT_PROMPT_NAMES",
    "UNSUPERVISED_PROTOCOL",
    "VOC_PROMPT_NAMES",
    "ZERO_SHOT_PROTOCOLS",
    "ClassificationProtocol",
    "UnsupervisedProtocol",
    "ZeroShotProtocol",
    "center_crop",
    "zero_shot_protocol",
]
