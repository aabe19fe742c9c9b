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
from annofree.inference.clusters import DENSESIAM_SHORT_SIDE
from annofree.inference.settings import ZeroShotSettings

# The reference's prompting names (NVlabs/GroupViT segmentation/datasets/*.py) for mmseg's class names.
VOC_PROMPT_NAMES = {"diningtable": "table", "pottedplant": "plant", "tvmonitor": "monitor"}
CONTEXT_PROMPT_NAMES = {"aeroplane": "airplane", "pottedplant": "plant", "tvmonitor": "monitor"}


# The official pipeline: sliding windows, mmseg's (2048, 448) rescale with OpenCV's bilinear, the patch
# remainder dropped; the other settings are ZeroShotSettings's defaults (short side 448, top-5...).
BENCHMARK_SETTINGS = ZeroShotSettings(mode="slide", max_long_side=2048, resize="official", patch_remainder="drop")


# ZeroShotSettings.prompts -> the template set that prompts with it
PROMPT_TEMPLATE_SETS = {"single": "simple", "ensemble": "full"}


@dataclass(frozen=True)
class ZeroShotProtocol:
    """How a zero-shot segmenter is run on one benchmark: its settings (the official pipeline's by default), the
    prompted names of its classes and its template set (a name of ``annofree.data.captions.TEMPLATE_SETS``)."""

    name: str
    settings: ZeroShotSettings = BENCHMARK_SETTINGS
    prompt_names: Mapping[str, str] = field(default_factory=dict)  # data set name -> prompted name
    templates: str = "simple"  # "a photo of a {}."

    def segmenter_options(self) -> dict[str, Any]:
        """The settings as keyword arguments of ``ZeroShotSegmenter`` (JSON-ready)."""
        return self.settings.to_dict()

    def prompt_templates(self) -> list[str]:
        """The prompt templates of the protocol's template set."""
        if self.templates not in TEMPLATE_SETS:
            raise UserError(f"unknown template set {self.templates!r} (use one of {', '.join(TEMPLATE_SETS)})")
        return list(TEMPLATE_SETS[self.templates])

    def queries(self, class_names: Sequence[str]) -> list[str]:
        """The text queries for ``class_names`` (the data set's names with the reference's edits)."""
        return [self.prompt_names.get(name, name) for name in class_names]

    def with_overrides(self, **overrides: Any) -> ZeroShotProtocol:
        """A copy with the given settings changed (``None`` values keep the protocol's)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, settings=ZeroShotSettings.from_dict(given, base=self.settings))


def _benchmark(name: str, bg_thresh: float | None = None, prompt_names: Mapping[str, str] | None = None):
    settings = BENCHMARK_SETTINGS if bg_thresh is None else replace(BENCHMARK_SETTINGS, bg_thresh=bg_thresh)
    return ZeroShotProtocol(name, settings, dict(prompt_names or {}))


# The one table: every benchmark's prompt names, background threshold and template set (tests/evaluation/
# test_protocols.py states the official values beside it).
ZERO_SHOT_PROTOCOLS: dict[str, ZeroShotProtocol] = {
    "voc": _benchmark("voc", 0.95, VOC_PROMPT_NAMES),
    "voc20": _benchmark("voc20", 0.95, VOC_PROMPT_NAMES),
    "context60": _benchmark("context60", 0.35, CONTEXT_PROMPT_NAMES),
    "context59": _benchmark("context59", 0.35, CONTEXT_PROMPT_NAMES),
    "coco-object": _benchmark("coco-object", 0.95),
    "ade20k": _benchmark("ade20k"),
    "cityscapes": _benchmark("cityscapes"),
    "cocostuff27": _benchmark("cocostuff27"),
    # A segmentation folder of one's own: whole images (the rest as the benchmarks).
    "folder": ZeroShotProtocol("folder", replace(BENCHMARK_SETTINGS, mode="whole")),
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

    short_side: int = DENSESIAM_SHORT_SIDE  # 320
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
    "BENCHMARK_SETTINGS",
    "CLASSIFICATION_PROTOCOL",
    "CONTEXT_PROMPT_NAMES",
    "PROMPT_TEMPLATE_SETS",
    "UNSUPERVISED_PROTOCOL",
    "VOC_PROMPT_NAMES",
    "ZERO_SHOT_PROTOCOLS",
    "ClassificationProtocol",
    "UnsupervisedProtocol",
    "ZeroShotProtocol",
    "center_crop",
    "zero_shot_protocol",
]
