"""Two-view augmentation: crops, flips and photometric changes, reproducible from an explicit generator."""

from __future__ import annotations

import pytest
import torch

from annofree.data.overlap import view_points
from annofree.data.views import (
    Photometric,
    TwoViews,
    ViewConfig,
    apply_photometric,
    crop_resize,
    draw_crop_boxes,
    draw_photometric,
)
from annofree.errors import UserError


def random_images(batch: int = 4, height: int = 40, width: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def views_of(images: torch.Tensor, seed: int, config: ViewConfig | None = None, config2: ViewConfig | None = None):
    return TwoViews(config or ViewConfig(size=32), config2)(images, torch.Generator().manual_seed(seed))


def test_views_have_the_output_size_and_known_geometry():
    images = random_images()
    view1, view2 = views_of(images, 0, ViewConfig(size=(24, 32)))
    for view in (view1, view2):
        assert view.images.shape == (4, 3, 24, 32) and view.images.dtype == torch.float32
        assert float(view.images.min()) >= 0.0 and float(view.images.max()) <= 1.0
        assert view.boxes.shape == (4, 4) and view.flips.shape == (4,) and view.flips.dtype == torch.bool
        x0, y0, x1, y1 = view.boxes.unbind(1)
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 48).all() and (y1 <= 40).all()
        assert (x1 > x0).all() and (y1 > y0).all()


def test_crop_boxes_follow_scale_and_ratio():
    boxes = draw_crop_boxes(500, 100, 100, (0.3, 0.5), (0.5, 2.0), torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h / 1e4
    assert area.min() >= 0.3 - 1e-4 and area.max() <= 0.5 + 1e-4
    assert (w / h).min() >= 0.5 - 1e-4 and (w / h).max() <= 2.0 + 1e-4
    assert boxes.min() >= 0 and boxes.max() <= 100
    # A thin image leaves the ratio range unreachable: the largest centred crop within the ratios.
    thin = draw_crop_boxes(3, 10, 100, (0.9, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    assert torch.allclose(thin, torch.tensor([[45.0, 0.0, 55.0, 10.0]]).expand(3, 4))


def test_same_seed_same_views_other_seed_other_views_and_no_global_rng():
    images = random_images()
    state = torch.get_rng_state()
    first, second = views_of(images, 7), views_of(images, 7)
    assert torch.equal(state, torch.get_rng_state())  # the training step's RNG is left alone
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes) and torch.equal(a.flips, b.flips)
    other = views_of(images, 8)
    assert not torch.equal(first[0].boxes, other[0].boxes)
    assert not torch.equal(first[0].boxes, first[1].boxes)  # the two views differ


def test_photometric_off_is_pure_geometry_and_does_not_change_the_geometry():
    images = random_images()
    plain = views_of(images, 3, ViewConfig(size=32, photometric=False))
    augmented = views_of(images, 3, ViewConfig(size=32, brightness=0.8, jitter_p=1.0, blur_p=1.0))
    for view, other in zip(plain, augmented, strict=True):
        expected = crop_resize(images.float() / 255, view.boxes, view.flips, (32, 32))
        assert torch.equal(view.images, expected)
        assert torch.equal(view.boxes, other.boxes) and torch.equal(view.flips, other.flips)
        assert not torch.allclose(view.images, other.images)


def test_crop_resize_of_the_whole_image_is_the_image_and_flip_mirrors_it():
    images = torch.rand(2, 3, 16, 20)
    whole = torch.tensor([[0.0, 0.0, 20.0, 16.0]]).expand(2, 4)
    out = crop_resize(images, whole, torch.tensor([False, True]), (16, 20))
    assert torch.allclose(out[0], images[0], atol=1e-5)
    assert torch.allclose(out[1], images[1].flip(-1), atol=1e-5)
    both_axes = torch.tensor([[False, True], [True, True]])  # (left-right, top-bottom)
    out = crop_resize(images, whole, both_axes, (16, 20))
    assert torch.allclose(out[0], images[0].flip(-2), atol=1e-5)
    assert torch.allclose(out[1], images[1].flip(-2, -1), atol=1e-5)


def test_top_bottom_flips_are_drawn_only_when_asked():
    images = torch.rand(64, 3, 16, 16)
    plain = TwoViews(ViewConfig(size=8, photometric=False))(images, torch.Generator().manual_seed(1))
    assert plain[0].flips.shape == (64,)
    both = TwoViews(ViewConfig(size=8, photometric=False, vflip_p=0.5))
    view1, view2 = both(images, torch.Generator().manual_seed(1))
    assert view1.flips.shape == view2.flips.shape == (64, 2)
    assert torch.equal(view1.flips[:, 0], plain[0].flips) and torch.equal(view1.boxes, plain[0].boxes)
    assert 10 < int(view1.flips[:, 1].sum()) < 54
    with pytest.raises(UserError, match="vflip_p"):
        ViewConfig(vflip_p=1.5)


@pytest.mark.parametrize("antialias", [True, False])
def test_crop_resize_puts_every_output_pixel_at_its_box_point(antialias):
    """Also when shrinking (anti-aliased by averaging samples): a coordinate ramp comes out at the centres."""
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    ramp = torch.stack([xs, ys])[None].repeat(16, 1, 1, 1)
    generator = torch.Generator().manual_seed(4)
    boxes = draw_crop_boxes(16, 64, 64, (0.3, 1.0), (3 / 4, 4 / 3), generator)
    flips = torch.rand(16, generator=generator) < 0.5
    out = crop_resize(ramp, boxes, flips, (12, 10), antialias=antialias)  # shrinks 2 to 6 times
    expected = view_points(boxes, flips, (12, 10)).permute(0, 3, 1, 2)
    assert (out - expected).abs().max() <= 0.5  # clamping at the image's edge only
    if antialias:  # averaging smooths: sharp detail is gone, unlike with single samples
        stripes = (torch.arange(64) % 2).float().expand(1, 1, 64, 64)
        whole = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
        smooth = crop_resize(stripes, whole, torch.tensor([False]), (16, 16))
        assert torch.allclose(smooth, torch.full_like(smooth, 0.5))


def photometric_params(n: int, seed: int, **options) -> tuple[Photometric, ViewConfig]:
    config = ViewConfig(**{"size": 16, "jitter_p": 1.0, "grayscale_p": 0.5, **options})
    return draw_photometric(n, config, torch.Generator().manual_seed(seed)), config


def test_photometric_ops_do_not_move_pixels():
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    params, config = photometric_params(6, 1, blur_p=0.0)
    out = apply_photometric(images, params, config)
    # Per-pixel operations commute with any rearrangement of the pixels (contrast uses the image mean only).
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(2))
    shuffled = images.flatten(2)[..., perm].reshape(images.shape)
    assert torch.allclose(
        apply_photometric(shuffled, params, config), out.flatten(2)[..., perm].reshape(out.shape), atol=1e-5
    )
    # The blur is symmetric, so all of it commutes with a mirror.
    params, config = photometric_params(6, 3, blur_p=1.0)
    mirrored = apply_photometric(images.flip(-1), params, config)
    assert torch.allclose(mirrored, apply_photometric(images, params, config).flip(-1), atol=1e-5)
    assert not torch.allclose(out, images)


def test_grayscale_and_ranges():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    params, config = photometric_params(4, 0, jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)
    out = apply_photometric(images, params, config)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    params, config = photometric_params(32, 5, jitter_p=0.8, jitter_each=True, blur_p=0.5)
    assert 0 < int(params.jitter_on.sum()) < 128  # each operation on its own in the released variant
    assert torch.equal(params.order, torch.arange(4).expand(32, 4))
    assert 0 < int(params.blur.sum()) < 32 and params.sigma.min() >= 0.1 and params.sigma.max() <= 2.0


def test_view_config_from_dict_and_validation():
    config = ViewConfig.from_dict({"size": 320, "scale": [0.5, 1.0], "brightness": 0.3, "jitter_each": True})
    assert config.scale == (0.5, 1.0) and config.out_size == (320, 320)
    with pytest.raises(UserError, match="unknown view option"):
        ViewConfig.from_dict({"sise": 3})
    with pytest.raises(UserError, match="scale"):
        ViewConfig(scale=(0.0, 1.0))
    with pytest.raises(UserError, match="flip_p"):
        ViewConfig(flip_p=1.5)
    with pytest.raises(ValueError, match="3 channels"):
        views_of(torch.rand(2, 2, 16, 16), 0)


def test_each_image_gets_its_own_factors():
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    only_brightness = {"contrast": 0.0, "saturation": 0.0, "hue": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}
    params, config = photometric_params(12, 1, brightness=0.5, jitter_p=0.6, **only_brightness)
    out = apply_photometric(images, params, config)
    factor = torch.where(params.jitter_on[:, 0], params.factors[:, 0], torch.ones(12))
    assert 0 < int(params.jitter_on[:, 0].sum()) < 12
    assert torch.allclose(out, (images * factor[:, None, None, None]).clamp(0, 1), atol=1e-6)
