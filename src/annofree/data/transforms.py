"""Per-sample image transforms for data-loader workers (numpy/Pillow, no torch threads in workers).

Batched GPU augmentation (kornia) is for the DenseSiam views; GroupViT needs only a random resized crop and
a flip per sample, which is cheapest done once, on the decoded image, before collation.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image


def random_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: random.Random,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop covering a random fraction ``scale`` of the area with aspect ratio
    (w / h) in ``ratio``, drawn log-uniformly (the Inception-style crop). After ``attempts`` misses it falls
    back to the largest centred crop whose ratio is within ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    image: np.ndarray,
    size: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> np.ndarray:
    """A random crop of ``image`` (``uint8 [H, W, 3]``) resized to ``size x size`` (bicubic), mirrored
    with probability 1/2 when ``flip``. Captions name objects, not sides, so a flip keeps the pair true."""
    top, left, h, w = random_crop_box(image.shape[0], image.shape[1], scale, ratio, rng)
    crop = Image.fromarray(image[top : top + h, left : left + w])
    out = np.array(crop.resize((size, size), Image.BICUBIC, reducing_gap=3.0))  # a writable copy
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
