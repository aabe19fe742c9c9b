"""The two alignment modes: views of an image whose pixels hold their own coordinates must agree point for point."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from annofree.data.overlap import (
    overlap_boxes,
    overlap_grid,
    replay_crop,
    sample_overlap,
    to_view_grid,
    view_points,
)
from annofree.data.views import TwoViews, ViewConfig

TOLERANCE = 0.5  # original pixels: bilinear interpolation of a linear ramp is exact away from the edges


def coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """``[B, 3, H, W]``: channel 0 = x, channel 1 = y of each pixel's centre in original pixels, channel 2 = 0."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)])[None].repeat(batch, 1, 1, 1)


def max_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def geometry_only(**options) -> ViewConfig:
    return ViewConfig(photometric=False, **options)


def flipped_differently(flips1: torch.Tensor, flips2: torch.Tensor) -> torch.Tensor:
    """[B] True where the two views are mirrored differently along some axis ([B] or [B, 2] flips)."""
    as_pairs = [f if f.ndim == 2 else torch.stack([f, torch.zeros_like(f)], 1) for f in (flips1, flips2)]
    return (as_pairs[0] != as_pairs[1]).any(1)


@pytest.mark.parametrize("vflip_p", [0.0, 0.5])
def test_overlap_grid_samples_the_same_original_points_in_both_views(vflip_p):
    images = coordinate_images(8, 40, 48)
    two_views = TwoViews(geometry_only(size=64, scale=(0.1, 1.0), vflip_p=vflip_p))
    generator = torch.Generator().manual_seed(0)
    checked, flipped_pairs = 0, 0
    for _ in range(40):
        view1, view2 = two_views(images, generator)
        f1, f2, valid = sample_overlap(
            view1.images, view2.images, view1.boxes, view1.flips, view2.boxes, view2.flips, k=4
        )
        assert f1.shape == f2.shape == (8, 16, 3) and valid.shape == (8,)
        points, _ = overlap_grid(view1.boxes, view2.boxes, 4)
        # Both views agree with each other and with the grid's original coordinates, flips included.
        assert max_gap(f1[valid, :, :2], f2[valid, :, :2]) <= TOLERANCE
        assert max_gap(f1[valid, :, :2], points[valid]) <= TOLERANCE
        checked += int(valid.sum())
        flipped_pairs += int((valid & flipped_differently(view1.flips, view2.flips)).sum())
    assert checked > 200 and flipped_pairs > 50  # many pairs, with and without a flip between the views
    if vflip_p:
        assert view1.flips.shape == (8, 2) and view1.flips[:, 1].any()


def test_sampling_works_on_maps_of_any_resolution():
    """A coarser map of a view (as a stride-2 network output) is sampled at the same places."""
    images = coordinate_images(4, 48, 48)
    view1, view2 = TwoViews(geometry_only(size=96, scale=(0.6, 1.0)))(images, torch.Generator().manual_seed(1))
    coarse1 = F.avg_pool2d(view1.images, 2)  # cell centres stay where align_corners=False puts them
    f1, f2, valid = sample_overlap(coarse1, view2.images, view1.boxes, view1.flips, view2.boxes, view2.flips, k=3)
    assert valid.all()
    assert (f1[..., :2] - f2[..., :2]).abs().max() <= TOLERANCE


def test_view_grids_map_points_exactly():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 64.0, 32.0]])
    flips = torch.tensor([False, True])
    points = view_points(boxes, flips, (4, 8))  # [2, 4, 8, 2]
    grid = to_view_grid(points.flatten(1, 2), boxes, flips).reshape(2, 4, 8, 2)
    expected_x = (torch.arange(8) + 0.5) / 8 * 2 - 1
    expected_y = (torch.arange(4) + 0.5) / 4 * 2 - 1
    assert torch.allclose(grid[..., 0], expected_x.expand(2, 4, 8), atol=1e-6)
    assert torch.allclose(grid[..., 1], expected_y[:, None].expand(2, 4, 8), atol=1e-6)
    assert torch.isclose(points[1, 0, 0, 0], torch.tensor(60.0))  # flipped: the first column is the box's right end


def test_pairs_without_overlap_are_invalid_and_finite():
    boxes1 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0]])
    boxes2 = torch.tensor([[12.0, 0.0, 20.0, 10.0], [10.0, 0.0, 20.0, 10.0], [5.0, 5.0, 30.0, 30.0]])
    flips = torch.tensor([True, False, False])
    _, valid = overlap_boxes(boxes1, boxes2)
    assert valid.tolist() == [False, False, True]  # disjoint, touching, overlapping
    features = torch.randn(3, 5, 6, 6)
    f1, f2, valid = sample_overlap(features, features, boxes1, flips, boxes2, flips, k=3)
    assert valid.tolist() == [False, False, True]
    assert torch.isfinite(f1).all() and torch.isfinite(f2).all()
    _, valid = overlap_boxes(boxes1, boxes2, min_size=20.0)
    assert not valid.any()


def test_random_views_without_overlap_do_not_break_sampling():
    images = coordinate_images(16, 64, 64)
    view1, view2 = TwoViews(geometry_only(size=16, scale=(0.01, 0.02)))(images, torch.Generator().manual_seed(2))
    f1, f2, valid = sample_overlap(view1.images, view2.images, view1.boxes, view1.flips, view2.boxes, view2.flips, 3)
    assert not valid.all()  # tiny crops of a large image: most pairs do not overlap
    assert torch.isfinite(f1).all() and torch.isfinite(f2).all()
    assert max_gap(f1[valid, :, :2], f2[valid, :, :2]) <= TOLERANCE


@pytest.mark.parametrize(("feature_size", "vflip_p"), [((32, 32), 0.0), ((8, 8), 0.0), ((8, 8), 0.5)])
def test_replay_crop_matches_view_one_at_every_position(feature_size, vflip_p):
    """The released mode: view 1 = random crop + flip, view 2 = the whole image; view 1's crop and flip replayed
    on view 2's map give view 1's map position for position (top-bottom flips too, when drawn)."""
    images = coordinate_images(8, 48, 48)
    two_views = TwoViews(
        geometry_only(size=48, scale=(0.5, 1.0), vflip_p=vflip_p), geometry_only(size=48, random_crop=False, flip_p=0.0)
    )
    generator = torch.Generator().manual_seed(3)
    flips = 0
    for _ in range(20):
        view1, view2 = two_views(images, generator)
        assert torch.equal(view2.boxes, torch.tensor([[0.0, 0.0, 48.0, 48.0]]).expand(8, 4))
        map1 = F.adaptive_avg_pool2d(view1.images, feature_size)  # "features" at the given stride
        map2 = F.adaptive_avg_pool2d(view2.images, feature_size)
        aligned, inside = replay_crop(map2, view1.boxes, view1.flips, view2.boxes, view2.flips, size=feature_size)
        assert aligned.shape == map1.shape and inside.all()
        cell = 48 / feature_size[0]  # a map cell in original pixels: the interpolation scale
        assert (aligned[:, :2] - map1[:, :2]).abs().max() <= TOLERANCE * max(1.0, cell / 2)
        flips += int(view1.flips.any(-1).sum()) if view1.flips.ndim == 2 else int(view1.flips.sum())
    assert flips > 30


def test_replay_crop_marks_positions_outside_view_two():
    features = torch.randn(1, 2, 8, 8)
    box1, box2 = torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([[8.0, 0.0, 24.0, 16.0]])
    no = torch.tensor([False])
    aligned, inside = replay_crop(features, box1, no, box2, no)
    assert inside[0, :, :4].logical_not().all() and inside[0, :, 4:].all()
    assert torch.isfinite(aligned).all()
