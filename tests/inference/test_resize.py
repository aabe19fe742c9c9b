"""The official resize law (mmcv's rescale_size + OpenCV's INTER_LINEAR on uint8) and annofree's antialiased one.

OpenCV (opencv-python-headless, a test-only dependency of the dev extra) is the reference here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from annofree.errors import UserError
from annofree.inference.pixels import resize_short_side
from annofree.inference.resize import rescaled_size, resize_antialias, resize_official, resize_pixels
from annofree.inference.zero_shot import ZeroShotSegmenter


def _photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour gradients plus noise and a few sharp edges: uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 11.0 - c) for c in range(3)], axis=-1)
    base[height // 3 : height // 2, width // 4 : width // 2] = (250, 10, 120)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _ours(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    out = resize_official(pixels, size)[0].permute(1, 2, 0) * 255
    assert torch.equal(out, out.round()), "the official law gives 8-bit values"
    return out.round().to(torch.uint8).numpy()


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((375, 500), (448, 597)),  # a VOC photo: upscaled by 1.1947
        ((333, 517), (448, 696)),  # odd sides, odd ratio
        ((37, 29), (448, 351)),  # upscaled 12x
        ((1000, 1333), (448, 597)),  # a photo downscaled by 2.23
        ((901, 640), (631, 448)),  # odd ratio, downscaled
        ((64, 64), (32, 32)),  # exactly half (OpenCV takes its area path: the same values)
        ((448, 5000), (184, 2048)),  # the long-side cap
        ((23, 17), (23, 40)),  # one side kept, the other stretched
    ],
)
def test_official_resize_matches_opencv_bilinear_within_one_grey_level(source, target):
    image = _photo_like(*source, seed=sum(source))
    reference = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
    difference = np.abs(_ours(image, target).astype(int) - reference.astype(int))
    assert difference.max() <= 1
    # Float bilinear (torch, no antialias) is further off: the 8-bit fixed-point law is what is reproduced.
    floats = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=target, mode="bilinear")
    floats = floats[0].permute(1, 2, 0).round().clamp(0, 255).numpy()
    assert (difference > 0).mean() < (np.abs(floats - reference) > 0).mean()


def test_rescaled_size_is_mmcvs_rescale_size_with_the_long_side_cap():
    # scale = min(2048 / long, 448 / short); each side int(side * scale + 0.5)
    assert rescaled_size(375, 500, 448, 2048) == (448, 597)  # 500 * 1.19467 = 597.33
    assert rescaled_size(500, 375, 448, 2048) == (597, 448)
    assert rescaled_size(366, 500, 448, 2048) == (448, 612)  # 612.02
    assert rescaled_size(448, 5000, 448, 2048) == (184, 2048)  # the cap binds: 448 * 0.4096 = 183.5 -> 184
    assert rescaled_size(448, 5000, 448) == (448, 5000)  # no cap
    assert rescaled_size(1000, 1000, 448, 2048) == (448, 448)
    assert rescaled_size(1, 4000, 448, 2048) == (1, 2048)  # at least one pixel


def test_the_long_side_cap_applies_in_the_segmenter(tiny_groupvit, tokenizer):
    image = _photo_like(12, 130, seed=1)  # short side 12 -> 48 would make the long side 520 > 200
    capped = ZeroShotSegmenter(
        tiny_groupvit, ["cat"], tokenizer=tokenizer, short_side=48, max_long_side=200, resize="official"
    )
    assert tuple(capped.logits(image).shape[-2:]) == rescaled_size(12, 130, 48, 200) == (18, 200)
    uncapped = ZeroShotSegmenter(tiny_groupvit, ["cat"], tokenizer=tokenizer, short_side=48, resize="official")
    assert tuple(uncapped.logits(image).shape[-2:]) == (48, 520)
    assert capped.segment(image).label_map.shape == (12, 130)


def test_the_segmenter_with_the_official_resize_sees_opencvs_image(tiny_groupvit, tokenizer):
    image = _photo_like(30, 45, seed=2)
    official = ZeroShotSegmenter(tiny_groupvit, ["cat", "dog"], tokenizer=tokenizer, short_side=36, resize="official")
    as_is = ZeroShotSegmenter(tiny_groupvit, ["cat", "dog"], tokenizer=tokenizer, short_side=None)
    height, width = rescaled_size(30, 45, 36)
    reference = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    torch.testing.assert_close(official.logits(image), as_is.logits(reference), rtol=1e-5, atol=1e-5)


def test_antialias_is_annofrees_resize_and_the_old_default():
    pixels = torch.rand(1, 3, 90, 120)
    shrunk = resize_antialias(pixels, (30, 40))
    expected = F.interpolate(pixels, size=(30, 40), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(shrunk, expected)
    grown = resize_antialias(pixels, (180, 240))
    torch.testing.assert_close(grown, F.interpolate(pixels, size=(180, 240), mode="bilinear", align_corners=False))
    torch.testing.assert_close(resize_short_side(pixels, 30), expected)  # default method: antialias


def test_an_unchanged_size_is_left_alone_and_unknown_options_are_refused(tiny_groupvit, tokenizer):
    pixels = torch.rand(1, 3, 8, 8)
    assert resize_pixels(pixels, (8, 8), "official") is pixels
    with pytest.raises(ValueError, match="unknown resize method"):
        resize_pixels(pixels, (4, 4), "cubic")
    with pytest.raises(UserError, match="unknown resize method 'cubic'"):
        ZeroShotSegmenter(tiny_groupvit, ["cat"], tokenizer=tokenizer, resize="cubic")
    with pytest.raises(UserError, match="max_long_side must be positive"):
        ZeroShotSegmenter(tiny_groupvit, ["cat"], tokenizer=tokenizer, max_long_side=0)
    with pytest.raises(UserError, match="unknown patch remainder rule 'pad'"):
        ZeroShotSegmenter(tiny_groupvit, ["cat"], tokenizer=tokenizer, patch_remainder="pad")
