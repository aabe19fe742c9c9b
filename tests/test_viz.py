from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from annofree.viz import (
    colorize,
    colorize_groups,
    group_colors,
    grouping_stages,
    groups_panel,
    label_colors,
    overlay,
    palette,
    side_by_side,
)

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


# ----------------------------------------------------------------------------- groups of each grouping stage


class KnownGroups:
    """A GroupViT stand-in whose grouping is known: patches of 4 px, two grouping stages.

    Stage 1 has four groups, the quadrants of the patch grid; stage 2 has two, stage-1 groups {0, 3} and {1, 2}
    (a checkerboard of quadrants). The soft assignments are not one-hot (0.7 to the own group, 0.1 to each other;
    0.9 / 0.1 in stage 2), so the maps must be chained and argmaxed, not read off.
    """

    config = SimpleNamespace(image=SimpleNamespace(patch_size=4))
    device, dtype = torch.device("cpu"), torch.float32  # not a torch module: it says where its inputs go

    def __init__(self):
        self.seen: list[tuple[int, int]] = []

    def normalize_pixels(self, pixels):
        return pixels

    def encode_groups(self, pixels):
        from annofree.models.grouping import chain_assignments
        from annofree.models.groupvit import GroupOutput

        batch, (height, width) = pixels.shape[0], pixels.shape[-2:]
        self.seen.append((height, width))
        rows, cols = height // 4, width // 4
        row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        quadrant = ((row >= rows // 2).long() * 2 + (col >= cols // 2).long()).flatten()  # raster order
        soft1 = torch.full((batch, 4, rows * cols), 0.1)
        soft1[:, quadrant, torch.arange(rows * cols)] = 0.7
        soft2 = torch.tensor([[0.9, 0.1, 0.1, 0.9], [0.1, 0.9, 0.9, 0.1]]).expand(batch, -1, -1)
        soft = [soft1, soft2]
        return GroupOutput(None, None, chain_assignments(soft), soft, (rows, cols))


def _known_maps(height, width):
    """The stand-in's groups per pixel (bilinear upsampling of these block layouts keeps the nearest patch's)."""
    y, x = np.mgrid[:height, :width]
    stage1 = (y >= height // 2) * 2 + (x >= width // 2)
    return [stage1, np.where((stage1 == 0) | (stage1 == 3), 0, 1)]


def _ids_from_colors(tile: np.ndarray, num_groups: int) -> np.ndarray:
    """Colours back to group ids; fails on a colour that is no group's."""
    lookup = {tuple(c): g for g, c in enumerate(group_colors(num_groups).tolist())}
    return np.vectorize(lambda r, g, b: lookup[(r, g, b)])(tile[..., 0], tile[..., 1], tile[..., 2])


def test_stage_group_maps_match_the_known_groups_pixel_for_pixel():
    model = KnownGroups()
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    maps, counts = grouping_stages(model, image)
    assert counts == [4, 2] and model.seen == [(32, 48)]
    expected = _known_maps(32, 48)
    for drawn, known in zip(maps, expected, strict=True):
        assert drawn.shape == (32, 48) and drawn.dtype == np.int64
        np.testing.assert_array_equal(drawn, known)

    # Drawn: pure colours (alpha 1, no titles, no enlargement), image | stage 1 | stage 2 with 8-px gaps.
    panel = np.asarray(groups_panel(image, maps, counts, alpha=1.0, min_side=1, titles=False, gap=8))
    assert panel.shape == (32, 3 * 48 + 2 * 8, 3)
    np.testing.assert_array_equal(panel[:, :48], image)
    for stage, (known, count) in enumerate(zip(expected, counts, strict=True)):
        left = (stage + 1) * (48 + 8)
        np.testing.assert_array_equal(_ids_from_colors(panel[:, left : left + 48], count), known)


def test_stage_group_maps_at_another_size_and_after_a_short_side_resize():
    model = KnownGroups()
    image = np.zeros((40, 60, 3), np.uint8)
    maps, _ = grouping_stages(model, image, short_side=16, size=(20, 30))
    assert model.seen == [(16, 24)]  # shorter side 16, both sides multiples of the patch
    for drawn, known in zip(maps, _known_maps(20, 30), strict=True):
        np.testing.assert_array_equal(drawn, known)
    # Colours of the panel, enlarged 8 times by nearest neighbour (longer side 30 -> 240).
    panel = np.asarray(groups_panel(image[:20, :30], maps, [4, 2], alpha=1.0, min_side=240, titles=False, gap=0))
    np.testing.assert_array_equal(
        _ids_from_colors(panel[:, 240:480], 4), np.kron(_known_maps(20, 30)[0], np.ones((8, 8), int))
    )


def test_the_last_stage_is_the_zero_shot_segmenters_grouping():
    from annofree.inference.zero_shot import group_maps

    from .tiny import tiny_groupvit

    model = tiny_groupvit(vocab_size=100).eval()
    image = np.random.default_rng(1).integers(0, 256, (36, 28, 3), dtype=np.uint8)
    maps, counts = grouping_stages(model, image)
    assert counts == [8, 4] and [m.shape for m in maps] == [(36, 28), (36, 28)]
    assert maps[0].max() < 8 and maps[1].max() < 4
    with torch.no_grad():
        pixels = model.normalize_pixels(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        out = model.encode_groups(torch.nn.functional.interpolate(pixels, size=(36, 28), mode="bilinear"))
    np.testing.assert_array_equal(maps[1], group_maps(out.grouping, out.grid, (36, 28))[0].numpy())


def test_group_colours_are_distinct_and_never_black():
    colors = group_colors(64)
    assert len({tuple(c) for c in colors.tolist()}) == 64 and [0, 0, 0] not in colors.tolist()
    np.testing.assert_array_equal(colorize_groups(np.array([[0, 63]]), 64)[0], colors[[0, 63]])
    with pytest.raises(ValueError, match="group ids"):
        colorize_groups(np.array([[0, 4]]), 4)


def test_groups_panel_titles_each_stage():
    image = np.zeros((20, 20, 3), np.uint8)
    maps = [np.zeros((20, 20), np.int64), np.ones((20, 20), np.int64)]
    titled = groups_panel(image, maps, [8, 2])
    plain = groups_panel(image, maps, [8, 2], titles=False)
    assert titled.height > plain.height == 240 and titled.width == plain.width == 3 * 240 + 2 * 8  # 12 x 20 px
    with pytest.raises(ValueError, match="does not match"):
        groups_panel(image, [np.zeros((10, 20), np.int64)])
