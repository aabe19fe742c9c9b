"""The DenseSiam release's augmentation laws as view options: square crops, its blur law, no anti-aliasing,
views drawn per image, and its replay-crop rounding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from PIL import Image, ImageFilter

from annofree.data.overlap import replay_crop
from annofree.data.views import (
    TwoViews,
    ViewConfig,
    crop_resize,
    draw_crop_boxes,
    draw_photometric,
    draw_square_boxes,
    release_replay_boxes,
)
from annofree.errors import UserError
from annofree.sections import parse_section


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_square_crop_law_statistics() -> None:
    boxes, draws = draw_square_boxes(20000, 480, 640, (0.5, 1.0), generator())  # H 480, W 640
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert torch.equal(w, h) and torch.equal(boxes, boxes.round())  # squares on whole pixels
    share = w / 480  # of the short side
    assert share.min() >= 0.5 and share.max() <= 1.0
    # side share uniform in [0.5, 1): mean 0.75, quartiles 0.625 / 0.875; area share E[r^2] = 0.583
    assert share.mean().item() == pytest.approx(0.75, abs=0.005)
    assert torch.quantile(share, 0.25).item() == pytest.approx(0.625, abs=0.01)
    assert torch.quantile(share, 0.75).item() == pytest.approx(0.875, abs=0.01)
    assert (share**2).mean().item() == pytest.approx(7 / 12, abs=0.005)
    assert torch.equal(w, torch.floor(draws[:, 0].double() * 480).float())
    assert boxes[:, :2].min() >= 0 and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all()
    # places uniform where the crop fits: the corner's mean is half the free room
    assert ((boxes[:, 0] / (640 - w)).mean().item()) == pytest.approx(0.5, abs=0.01)


def test_area_crop_law_statistics_for_comparison() -> None:
    boxes = draw_crop_boxes(20000, 640, 640, (0.5, 1.0), (3 / 4, 4 / 3), generator())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h / 640**2
    assert area.min() >= 0.5 - 1e-4 and (w / h).min() >= 0.75 - 1e-4 and (w / h).max() <= 4 / 3 + 1e-4
    assert not torch.equal(w, h)
    # Larger crops than the square law's on average (redraws of misfits pull the mean under 0.75); the square
    # law cuts 41% of its crops under half the area (r < sqrt(1/2)), the area law none.
    square, _ = draw_square_boxes(20000, 640, 640, (0.5, 1.0), generator())
    square_area = ((square[:, 2] - square[:, 0]) / 640) ** 2
    assert area.mean().item() > square_area.mean().item() + 0.08
    assert (square_area < 0.5).float().mean().item() == pytest.approx(math.sqrt(0.5) * 2 - 1, abs=0.01)


def test_views_pick_the_crop_law_and_keep_the_draws() -> None:
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=generator())
    square = ViewConfig(size=16, crop_law="square", side_scale=(0.5, 1.0))
    v1, v2 = TwoViews(square, ViewConfig(size=16, random_crop=False))(images, generator(3))
    assert v1.crop_draws.shape == (8, 3) and v2.crop_draws is None
    assert torch.equal(v1.boxes[:, 2] - v1.boxes[:, 0], v1.boxes[:, 3] - v1.boxes[:, 1])
    with pytest.raises(UserError, match="side_scale"):
        ViewConfig(side_scale=(0.0, 1.0))
    with pytest.raises(UserError, match="crop_law"):
        parse_section(ViewConfig, {"crop_law": "circle"}, "data.view1")


def test_release_blur_law() -> None:
    config = ViewConfig(size=320, blur_p=0.5, blur_law="release", release_blur_sigma=(0.1, 2.0))
    params = draw_photometric(40000, config, generator())
    assert params.blur.float().mean().item() == pytest.approx(0.5, abs=0.01)
    sigma = params.sigma[params.blur]
    # sigma = 0.1 + 3.8 (u - 0.5) runs over (-1.8, 0.1], taken as |sigma|: 0-1.8, mean (1.8^2 + 0.1^2) / 3.8
    assert sigma.min() >= 0 and sigma.max() <= 1.8 + 1e-5
    assert sigma.mean().item() == pytest.approx((1.8**2 + 0.1**2) / 3.8, abs=0.02)
    assert (sigma < 0.1).float().mean().item() == pytest.approx(0.2 / 1.9, abs=0.01)  # both signs land here
    # PIL, which the release blurs with, uses only sigma squared: a negative radius blurs as the positive one.
    image = Image.effect_noise((32, 32), 60).convert("RGB")
    negative = image.filter(ImageFilter.GaussianBlur(radius=-1.2)).tobytes()
    assert negative == image.filter(ImageFilter.GaussianBlur(radius=1.2)).tobytes() != image.tobytes()
    with pytest.raises(UserError, match="blur_p < 1"):
        ViewConfig(blur_law="release", blur_p=1.0)


def test_release_blur_sigma_is_scaled_to_each_views_pixels() -> None:
    images = torch.rand(64, 3, 64, 64, generator=generator())
    whole = ViewConfig(size=32, random_crop=False, jitter_p=0.0, grayscale_p=0.0, blur_law="release")
    views = TwoViews(whole, whole)
    draws = views.draw(64, 64, 64, generator(1))
    source_sigma = draws[0].photometric.sigma.clone()
    blurred = draws[0].photometric.blur
    assert blurred.any()
    # The view halves the image, so its blur must be that of sigma / 2 in the view's pixels.
    view = views.render(images, draws)[0]
    plain = crop_resize(images, draws[0].geometry.boxes, draws[0].geometry.flips, (32, 32))
    b = int(blurred.nonzero()[0, 0])
    expected = gaussian_blur2d(plain[b : b + 1], (7, 7), (source_sigma[b] / 2).expand(1, 2), border_type="reflect")
    assert torch.allclose(view.images[b : b + 1], expected, atol=1e-4)


def test_antialias_switch_gives_the_releases_plain_interpolation() -> None:
    images = torch.rand(1, 3, 64, 64, generator=generator())
    box = torch.tensor([[8.0, 4.0, 56.0, 52.0]])  # 48 px on whole pixels, shrunk to 20
    plain = F.interpolate(images[:, :, 4:52, 8:56], size=(20, 20), mode="bilinear", align_corners=False)
    off = crop_resize(images, box, torch.tensor([False]), (20, 20), antialias=False)
    on = crop_resize(images, box, torch.tensor([False]), (20, 20), antialias=True)
    assert torch.allclose(off, plain, atol=1e-5)
    assert not torch.allclose(on, plain, atol=1e-3)
    assert on.std() < off.std()  # averaging smooths the noise


def test_per_image_draws_do_not_depend_on_the_batch() -> None:
    images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8, generator=generator())
    config = ViewConfig(size=24, crop_law="square", blur_law="release")
    views = TwoViews(config, ViewConfig(size=24, random_crop=False, blur_law="release"))
    seeds = [11, 12, 13, 14]
    a1, a2 = views.per_image(images, [generator(s) for s in seeds])
    b1, b2 = views.per_image(images[[2, 0]], [generator(13), generator(11)])  # other batch, other order
    for a, b in ((a1, b1), (a2, b2)):
        assert torch.equal(a.images[[2, 0]], b.images) and torch.equal(a.boxes[[2, 0]], b.boxes)
    c1, _ = views(images[:1], generator(11))  # a batch of one draws the same as per_image
    assert torch.equal(c1.images, a1.images[:1])
    d1, _ = views.per_image(images, [generator(s + 100) for s in seeds])
    assert not torch.equal(d1.boxes, a1.boxes)


def test_release_replay_boxes_recut_the_crop_on_the_feature_grid() -> None:
    boxes, draws = draw_square_boxes(64, 640, 640, (0.5, 1.0), generator(5))
    replay = release_replay_boxes(draws, (80, 80), (640, 640))
    assert torch.equal(replay % 8, torch.zeros_like(replay))  # on the 8 px feature cells
    assert (replay - boxes).abs().max() <= 12 and not torch.equal(replay, boxes)
    # Replaying that box equals the release's recipe on a feature map: cut the whole cells, resize to 80 x 80.
    ys, xs = torch.meshgrid(torch.arange(80.0), torch.arange(80.0), indexing="ij")
    features = torch.stack([xs, ys * 3.0 + xs * xs / 80])[None].expand(64, 2, 80, 80).contiguous()
    whole = torch.tensor([[0.0, 0.0, 640.0, 640.0]]).expand(64, 4)
    no_flip = torch.zeros(64, dtype=torch.bool)
    aligned, _ = replay_crop(features, replay, no_flip, whole, no_flip, (80, 80))
    for b in range(64):
        side = math.floor(draws[b, 0].item() * 80)
        top = round((80 - side) * draws[b, 1].item())
        left = round((80 - side) * draws[b, 2].item())
        cut = features[b : b + 1, :, top : top + side, left : left + side]
        expected = F.interpolate(cut, size=(80, 80), mode="bilinear", align_corners=False)
        # equal inside; on the outer ring the release clamps to its cut where the replay reads the next cell
        assert torch.allclose(aligned[b, :, 1:-1, 1:-1], expected[0, :, 1:-1, 1:-1], atol=1e-3), b
