import numpy as np
import pytest
from PIL import Image

from annofree.viz import colorize, label_colors, overlay, palette, side_by_side

NAMES = ["background", "cat", "dog", "grass"]


def test_palette_is_fixed_distinct_and_starts_with_black_background():
    colors = palette(300)
    assert colors.shape == (300, 3) and colors.dtype == np.uint8
    assert colors[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colors.tolist()}) == 300
    np.testing.assert_array_equal(palette(300)[:25], palette(25))  # a label keeps its colour
    # The first hundred colours are far apart (no two nearly equal): L1 distance over 60 levels.
    first = colors[:100].astype(int)
    distances = np.abs(first[:, None] - first[None]).sum(-1) + np.eye(100, dtype=int) * 999
    assert distances.min() > 60


def test_colorize_maps_labels_to_palette_colours():
    labels = np.array([[0, 1], [3, 1]])
    colors = colorize(labels)
    assert colors.shape == (2, 2, 3)
    np.testing.assert_array_equal(colors[1, 0], palette(4)[3])
    assert colors[0, 0].tolist() == [0, 0, 0]
    # Without a background label, class 0 gets a real colour.
    assert colorize(labels, ["cat", "dog", "x", "y"])[0, 0].tolist() != [0, 0, 0]
    with pytest.raises(ValueError, match="only 2 class names"):
        colorize(labels, ["background", "cat"])


def _image_and_labels(height, width):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = np.zeros((height, width), dtype=np.int64)
    labels[:, width // 2 :] = 2  # background and dog only
    return image, labels


def test_overlay_blends_and_lists_only_present_classes():
    image, labels = _image_and_labels(60, 80)
    out = overlay(image, labels, NAMES, alpha=0.5)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    assert out.height >= 60 and out.width > 80
    array = np.asarray(out)
    colors = label_colors(NAMES)
    expected = (image * 0.5 + colors[labels] * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(array[:60, :80], expected)
    panel = {tuple(p) for p in array[:, 80:].reshape(-1, 3).tolist()}
    assert tuple(colors[2].tolist()) in panel  # dog swatch
    assert tuple(colors[0].tolist()) in panel  # background swatch (and text ink)
    assert tuple(colors[1].tolist()) not in panel  # cat is absent
    assert tuple(colors[3].tolist()) not in panel  # grass is absent


def _ink_height(picture: Image.Image, image_width: int) -> int:
    """Rows of the legend panel holding dark text pixels."""
    panel = np.asarray(picture)[:, image_width:].astype(int)
    dark = (panel.sum(-1) < 150).any(axis=1)
    return int(dark.sum())


def test_legend_is_readable_for_tiny_and_large_images():
    tiny_image, tiny_labels = _image_and_labels(12, 10)
    tiny = overlay(tiny_image, tiny_labels, NAMES)
    # The panel grows taller than the 12-pixel image so that both entries fit at a readable size.
    assert tiny.height > 12
    assert _ink_height(tiny, 10) >= 2 * 8
    big_image, big_labels = _image_and_labels(1400, 300)
    big = overlay(big_image, big_labels, NAMES)
    assert big.height == 1400
    assert _ink_height(big, 300) > 2 * _ink_height(tiny, 10)


def test_overlay_checks_its_inputs():
    image, labels = _image_and_labels(10, 10)
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, labels[:5], NAMES)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, labels, NAMES, alpha=2)
    assert overlay(Image.fromarray(image), labels, NAMES, legend=False).size == (10, 10)


def test_side_by_side_enlarges_small_images_exactly_and_shows_truth_when_given():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255
    predicted = np.zeros((16, 16), np.int64)
    predicted[:, 8:] = 1
    names = ["background", "thing"]
    with_truth = side_by_side(image, predicted, names, truth=predicted.astype(np.uint8))
    without = side_by_side(image, predicted, names)
    first = np.asarray(with_truth)[:256, :256]
    assert first.shape == (256, 256, 3)  # 16 px enlarged 16 times, nearest neighbour: the picture itself
    assert (first[:, :128] == 0).all() and (first[:, 128:] == 255).all()
    assert with_truth.width > without.width > 256 and with_truth.height == without.height
