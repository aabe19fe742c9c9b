import random

import numpy as np
import pytest

from annofree.data.transforms import random_crop_box, random_resized_crop


@pytest.mark.parametrize("shape", [(40, 60), (300, 20), (7, 7)])
def test_crop_boxes_stay_inside_the_image(shape):
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_crop_box(*shape, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert min(top, left) >= 0 and h > 0 and w > 0
        assert top + h <= shape[0] and left + w <= shape[1]


def test_crop_area_follows_the_scale_range():
    rng = random.Random(1)
    areas = [np.prod(random_crop_box(100, 100, (0.5, 0.6), (1.0, 1.0), rng)[2:]) / 1e4 for _ in range(100)]
    assert min(areas) >= 0.48 and max(areas) <= 0.62


def test_random_resized_crop_size_dtype_and_determinism():
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    a = random_resized_crop(image, 32, random.Random(3))
    b = random_resized_crop(image, 32, random.Random(3))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and a.flags.writeable
    assert np.array_equal(a, b)


def test_full_crop_with_flip_mirrors_the_image():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    outs = [random_resized_crop(image, 16, random.Random(s), (1.0, 1.0), (1.0, 1.0)) for s in range(10)]
    assert any(np.array_equal(o, image) for o in outs)
    assert any(np.array_equal(o, image[:, ::-1]) for o in outs)
    assert all(np.array_equal(o, image) or np.array_equal(o, image[:, ::-1]) for o in outs)
