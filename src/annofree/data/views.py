"""Two augmented views of every image of a batch, batched on the images' device, with known geometry.

:class:`TwoViews` turns a batch of same-size images ``[B, 3, H, W]`` (``uint8`` or float in ``[0, 1]``) into two
:class:`View` s. Each view is a random resized crop (scale and aspect ratio ranges as torchvision's
``RandomResizedCrop``, drawn continuously, so crop boxes have sub-pixel corners) resized to the output size,
mirrored left-right with probability ``flip_p`` (and top-bottom with ``vflip_p``, 0 by default: for data that
has no up, such as aerial or microscopy images), then photometrically augmented as in SimSiam / MoCo v2: colour jitter
(brightness, contrast, saturation, hue, in a random order per image, all with probability ``jitter_p``),
grayscale (``grayscale_p``) and Gaussian blur (``blur_p``, sigma uniform in ``blur_sigma``, in output pixels).
Each view returns its crop box ``(x0, y0, x1, y1)`` in the original image's continuous pixel coordinates and
its flip flags (see :mod:`annofree.data.overlap` for the conventions), from which the overlap of the two views
is computed exactly.

Photometric operations are per-pixel except the blur, which is symmetric, so none of them moves content: the
geometry of a view is its box and flip alone. All randomness comes from the ``torch.Generator`` passed in (a
CPU one; the few parameters are drawn on the CPU and moved to the images' device), never from the global torch
RNG, which the training step owns. The geometry of both views is drawn before any photometric parameter, so
switching photometric augmentation off leaves the crops and flips of a seed unchanged.

The released DenseSiam segmentation variant is two views of a 640 x 640 centre crop, view 2's features aligned
by :func:`annofree.data.overlap.replay_crop`; ``configs/densesiam/cocostuff27_segment.yaml`` writes it out with
the release's own laws as options (docs/densesiam-release.md): ``crop_law: square`` (a square whose side is
``side_scale`` of the short side, whole pixels: :func:`draw_square_boxes`), ``blur_law: release`` (its sigma
formula, in the 640 px image's pixels, scaled here to each view's pixels by the crop's shrink, since the release
blurs before cropping and resizing while photometric operations run here on the view) and ``antialias: false``
for view 1 (the release resizes its crop with ``F.interpolate``). annofree's defaults stay torchvision's area law,
a uniform sigma in view pixels and anti-aliased resizing.

Pixel normalisation (mean / std) is left to the model.

Uses kornia's functional colour operations (the torchvision / PIL conventions: multiplicative brightness,
contrast and saturation as blends with the grey mean / grey image, hue as a rotation) and its Gaussian blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from kornia.filters import gaussian_blur2d

from annofree.data.overlap import view_points
from annofree.errors import UserError

MAX_SUPERSAMPLE = 4  # anti-aliasing: at most 4 x 4 bilinear samples averaged per output pixel
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop


@dataclass(frozen=True)
class ViewConfig:
    """How one view is made. The defaults are SimSiam's (MoCo v2) augmentations at 224 px."""

    size: int | tuple[int, int] = 224  # output (h, w), or one int for a square
    random_crop: bool = True  # False: the view is the whole image resized to `size` (box (0, 0, W, H))
    crop_law: Literal["area", "square"] = "area"  # area: `scale` and `ratio`; square: `side_scale` (the release)
    scale: tuple[float, float] = (0.2, 1.0)  # crop area as a fraction of the image's (crop_law area)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio w / h, drawn log-uniformly (crop_law area)
    side_scale: tuple[float, float] = (0.5, 1.0)  # crop_law square: the side as a fraction of the short side
    flip_p: float = 0.5  # left-right
    vflip_p: float = 0.0  # top-bottom; > 0 makes the view's flips [B, 2] (left-right, top-bottom)
    photometric: bool = True  # False: geometry only (no jitter, grayscale or blur)
    brightness: float = 0.4  # factor uniform in [max(0, 1 - x), 1 + x]
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # rotation uniform in [-x, x] turns, x <= 0.5
    jitter_p: float = 0.8
    jitter_each: bool = False  # True: each of the four on its own with jitter_p, in a fixed order (the release)
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur_law uniform: sigma's range, in output pixels
    blur_p: float = 0.5
    blur_law: Literal["uniform", "release"] = "uniform"  # release: see draw_photometric
    release_blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur_law release: its sigma argument, source pixels
    antialias: bool = True  # average several bilinear samples per output pixel when shrinking

    def __post_init__(self):
        h, w = self.out_size
        if h < 1 or w < 1:
            raise UserError(f"view size must be positive, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise UserError(f"view scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise UserError(f"view ratio must satisfy 0 < low <= high, got {self.ratio}")
        if not 0 < self.side_scale[0] <= self.side_scale[1] <= 1:
            raise UserError(f"view side_scale must satisfy 0 < low <= high <= 1, got {self.side_scale}")
        if self.blur_law == "release" and not self.blur_p < 1:
            raise UserError(f"blur_law release needs blur_p < 1 (its sigma divides by 1 - blur_p), got {self.blur_p}")
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            raise UserError("brightness, contrast and saturation must be >= 0 and hue in [0, 0.5]")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise UserError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        for name in ("flip_p", "vflip_p", "jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")

    @property
    def out_size(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else (int(self.size[0]), int(self.size[1]))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ViewConfig:
        """From a config section (lists become tuples); an unknown key is a ``UserError`` naming it."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown view option(s) {unknown} (known: {sorted(known)})")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


@dataclass
class View:
    """One augmented view of each image of a batch."""

    images: torch.Tensor  # [B, C, h, w] float32, in [0, 1] for uint8 input
    boxes: torch.Tensor  # [B, 4] float32 (x0, y0, x1, y1) in the original image's pixel coordinates
    flips: torch.Tensor  # [B] bool: mirrored left-right after cropping; [B, 2] (left-right, top-bottom) if vflip_p
    crop_draws: torch.Tensor | None = None  # crop_law square: [B, 3] (side share, row and column places in [0, 1))


@dataclass
class Photometric:
    """Photometric parameters of one view, per image (CPU tensors)."""

    jitter_on: torch.Tensor  # [B, 4] bool: brightness, contrast, saturation, hue applied
    factors: torch.Tensor  # [B, 4] brightness, contrast, saturation factors, hue in turns
    order: torch.Tensor  # [B, 4] long: order[b, s] = the operation applied at step s
    grayscale: torch.Tensor  # [B] bool
    blur: torch.Tensor  # [B] bool
    sigma: torch.Tensor  # [B] float, in output pixels (blur_law release: in source pixels until TwoViews scales it)


@dataclass
class Geometry:
    """The crop and flip of one view, per image (CPU tensors)."""

    boxes: torch.Tensor  # [B, 4]
    flips: torch.Tensor  # [B] or [B, 2]
    crop_draws: torch.Tensor | None  # [B, 3] for crop_law square


@dataclass
class ViewDraws:
    """Everything random about one view of each image: its geometry and its photometric parameters (None: off)."""

    geometry: Geometry
    photometric: Photometric | None


def _cat(items: list[Any]) -> Any:
    """Dataclasses of per-image tensors (or None) concatenated along the images, field by field."""
    first = items[0]
    if first is None or isinstance(first, torch.Tensor):
        return None if first is None else torch.cat(items)
    return type(first)(**{f.name: _cat([getattr(item, f.name) for item in items]) for f in fields(first)})


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def draw_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Random resized crop boxes (torchvision's rule, continuous): ``[n, 4]`` float32 (x0, y0, x1, y1).

    A crop covers a fraction uniform in ``scale`` of the ``height x width`` area with an aspect ratio
    (w / h) log-uniform in ``ratio``; of ``CROP_ATTEMPTS`` draws the first that fits is used, and if none does,
    the largest centred crop with a ratio within ``ratio``. The position is uniform where the crop fits. The
    number of random draws does not depend on the outcome, so a generator's later draws stay put.
    """
    shape = (n, CROP_ATTEMPTS)
    area = _uniform(shape, *scale, generator) * (height * width)
    aspect = torch.exp(_uniform(shape, math.log(ratio[0]), math.log(ratio[1]), generator))
    w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (w <= width) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting attempt
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    fallback_w, fallback_h = _fallback_crop(height, width, ratio)
    found = fits.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    position = torch.rand((n, 2), generator=generator)
    x0 = torch.where(found, position[:, 0] * (width - w), (width - w) / 2)
    y0 = torch.where(found, position[:, 1] * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1).float()


def draw_square_boxes(
    n: int, height: int, width: int, side_scale: tuple[float, float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops as the DenseSiam release cuts them: ``(boxes [n, 4], draws [n, 3])``.

    A share ``r`` uniform in ``side_scale`` and two places ``u_row, u_col`` uniform in ``[0, 1)``; the side is
    ``floor(r * short side)`` whole pixels and the corner ``(round((W - side) u_col), round((H - side) u_row))``
    (ties to even, as Python's ``round``). The area share is then ``r**2`` (0.25-1 for ``side_scale (0.5, 1)``),
    not uniform. ``draws`` keeps ``(r, u_row, u_col)``, from which the release's replay crop is recut
    (:func:`release_replay_boxes`).
    """
    draws = torch.cat([_uniform((n, 1), *side_scale, generator), torch.rand((n, 2), generator=generator)], dim=1)
    draws = draws.double()
    side = torch.floor(draws[:, 0] * min(height, width)).clamp(min=1)
    top = torch.round((height - side) * draws[:, 1])
    left = torch.round((width - side) * draws[:, 2])
    return torch.stack([left, top, left + side, top + side], dim=1).float(), draws.float()


def release_replay_boxes(draws: torch.Tensor, feature_size: tuple[int, int], image_size: tuple[int, int]):
    """The box (image pixels) that the release's replay crop cuts from view 2's feature map for square crops.

    The release redraws the crop of :func:`draw_square_boxes` on the ``feature_size`` map from the same
    ``(r, u_row, u_col)`` (whole feature pixels), so the replayed box is the image crop rounded to the feature
    grid: at 640 px with 8 px cells and ``side_scale (0.5, 1)`` an aligned position lands 3.7 px from where view 1
    shows it on average, at most 11 px along an axis (``docs/densesiam-release.md``). ``draws [B, 3]`` ->
    ``[B, 4]`` (x0, y0, x1, y1).
    """
    h, w = feature_size
    height, width = image_size
    draws = draws.double()
    side = torch.floor(draws[:, 0] * min(h, w)).clamp(min=1)
    top, left = torch.round((h - side) * draws[:, 1]), torch.round((w - side) * draws[:, 2])
    cell = torch.tensor([width / w, height / h, width / w, height / h], dtype=torch.float64, device=draws.device)
    return (torch.stack([left, top, left + side, top + side], dim=1) * cell).float()


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    aspect = width / height
    if aspect < ratio[0]:
        return float(width), width / ratio[0]
    if aspect > ratio[1]:
        return height * ratio[1], float(height)
    return float(width), float(height)


def crop_resize(
    images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: tuple[int, int], antialias: bool = True
) -> torch.Tensor:
    """Cut each box out of its image, resize it to ``size`` (bilinear) and mirror it where ``flips``.

    ``images [B, C, H, W]`` float, ``boxes [B, 4]`` in pixel coordinates, ``flips [B]`` or ``[B, 2]`` ->
    ``[B, C, h, w]``. Output pixel ``(i, j)`` is the image at the box point ``((j + 0.5) / w, (i + 0.5) / h)``
    (mirrored along each flipped axis), the convention of :mod:`annofree.data.overlap`. With ``antialias``, when
    a box is larger than the output, each output pixel averages ``f x f`` bilinear samples spread over its
    footprint (``f`` the shrink factor rounded up, at most ``MAX_SUPERSAMPLE``, one ``f`` per batch), as
    ``roi_align``'s sampling ratio; the average of a linear ramp is still its value at the pixel centre, so the
    geometry is unchanged.
    """
    h, w = size
    height, width = images.shape[-2:]
    factor = 1
    if antialias:
        shrink = torch.maximum((boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h).max()
        factor = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(float(shrink) - 1e-6))))
    points = view_points(boxes.to(images.device), flips, (h * factor, w * factor))  # [B, h f, w f, 2]
    scale = torch.tensor([width, height], device=images.device, dtype=torch.float32)
    grid = points / scale * 2.0 - 1.0  # normalised in the original image, align_corners=False
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, factor) if factor > 1 else out


def draw_photometric(n: int, config: ViewConfig, generator: torch.Generator) -> Photometric:
    """Photometric parameters for ``n`` images (a fixed number of draws whatever the outcome)."""
    ranges = [(max(0.0, 1 - x), 1 + x) for x in (config.brightness, config.contrast, config.saturation)]
    ranges.append((-config.hue, config.hue))
    factors = torch.stack([_uniform((n,), low, high, generator) for low, high in ranges], dim=1)
    if config.jitter_each:
        jitter_on = torch.rand((n, 4), generator=generator) < config.jitter_p
        order = torch.arange(4).expand(n, 4)
    else:
        jitter_on = (torch.rand((n, 1), generator=generator) < config.jitter_p).expand(n, 4)
        order = torch.rand((n, 4), generator=generator).argsort(dim=1)  # a random permutation per image
    # A zero-width range (e.g. brightness 0) means the operation is off: skip it rather than apply a no-op.
    jitter_on = jitter_on & torch.tensor([high > low for low, high in ranges])
    grayscale = torch.rand(n, generator=generator) < config.grayscale_p
    if config.blur_law == "release":
        blur, sigma = _release_blur(n, config.blur_p, config.release_blur_sigma, generator)
    else:
        blur = torch.rand(n, generator=generator) < config.blur_p
        sigma = _uniform((n,), *config.blur_sigma, generator)
    return Photometric(jitter_on, factors, order, grayscale, blur, sigma)


def _release_blur(
    n: int, p: float, sigma_range: tuple[float, float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's blur law (its ReplayRandomGaussianBlur): one draw ``u`` uniform in ``[0, 1)`` both decides
    (``u < p``) and sets ``sigma = a + (b - a) (u - p) / (1 - p)`` for ``(a, b) = sigma_range``. Blurred draws
    have ``u - p < 0``, so with the release's ``p = 0.5, (0.1, 2)`` sigma runs from 0.1 down to -1.8; PIL's
    blur uses ``sigma**2``, so it acts as ``|sigma|``: 0-1.8, in the pixels of the image blurred (the release
    blurs the 640 px image before cropping). Returns ``(blur [n] bool, |sigma| [n])`` in source pixels."""
    low, high = sigma_range
    u = torch.rand(n, generator=generator)
    sigma = low + (high - low) / (1 - p) * (u - p)
    return u < p, sigma.abs()


_JITTER_OPS = (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
    lambda image, turns: adjust_hue(image, turns * (2 * math.pi)),  # kornia takes radians
)


def apply_photometric(images: torch.Tensor, params: Photometric, config: ViewConfig) -> torch.Tensor:
    """Colour jitter, grayscale and blur, each on the images selected by ``params``.

    ``images [B, 3, h, w]`` float in ``[0, 1]`` -> the same shape, in ``[0, 1]``. Selections are made on the CPU
    (the parameters live there), so no GPU synchronisation is needed and unselected images cost nothing.
    """
    out = images.clone()
    for step in range(4):
        for op, function in enumerate(_JITTER_OPS):
            chosen = params.jitter_on[:, op] & (params.order[:, step] == op)
            _apply(out, chosen, lambda x, idx, f=function, o=op: f(x, params.factors[idx, o].to(x)))
    _apply(out, params.grayscale, lambda x, idx: rgb_to_grayscale(x).expand_as(x))
    max_sigma = config.blur_sigma[1]
    if config.blur_law == "release":  # sigma depends on the crop's shrink: size the kernel for this batch
        max_sigma = float(params.sigma[params.blur].max()) if bool(params.blur.any()) else 0.0
    kernel = _blur_kernel_size(max_sigma, images.shape[-2:])
    _apply(
        out,
        params.blur,
        lambda x, idx: gaussian_blur2d(x, kernel, params.sigma[idx, None].expand(-1, 2).to(x), border_type="reflect"),
    )
    return out


def _apply(images: torch.Tensor, chosen: torch.Tensor, function) -> None:
    """``images[chosen] = function(images[chosen], indices)`` in place; ``chosen`` is a CPU bool mask."""
    indices = chosen.nonzero()[:, 0]
    if indices.numel() == 0:
        return
    on_device = indices.to(images.device, non_blocking=True)
    images[on_device] = function(images[on_device], indices)


def _blur_kernel_size(max_sigma: float, size: tuple[int, int]) -> tuple[int, int]:
    """An odd kernel reaching 3 sigma, no wider than reflection padding allows."""
    half = math.ceil(3 * max_sigma)
    return tuple(2 * min(half, dim - 1) + 1 for dim in size)


class TwoViews:
    """Two views of every image of a batch: ``TwoViews(view1, view2)(images, generator) -> (View, View)``.

    ``view2`` defaults to ``view1`` (the symmetric pre-training setting). ``images [B, C, H, W]``: ``uint8``
    (scaled to ``[0, 1]``) or float (kept as it is, e.g. coordinate maps for tests); photometric augmentation
    needs ``C = 3``. ``draw`` and ``render`` split the call in two; ``draw_each`` draws every image from its own
    generator (views fixed per image, as the release: :meth:`per_image`).
    """

    def __init__(self, view1: ViewConfig | None = None, view2: ViewConfig | None = None):
        self.configs = (view1 or ViewConfig(), view2 or view1 or ViewConfig())

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[View, View]:
        _check_generator(generator)
        return self.render(images, self.draw(images.shape[0], *_image_size(images), generator))

    def per_image(self, images: torch.Tensor, generators: list[torch.Generator]) -> tuple[View, View]:
        """Both views of image ``b`` drawn from ``generators[b]`` alone (as a batch of one would draw them)."""
        if len(generators) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(generators)} generators")
        for generator in generators:
            _check_generator(generator)
        return self.render(images, self.draw_each(*_image_size(images), generators))

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> tuple[ViewDraws, ViewDraws]:
        """The random parameters of both views of ``n`` images, geometry of both views first."""
        geometry = [self._draw_geometry(config, n, height, width, generator) for config in self.configs]
        photometric = [draw_photometric(n, c, generator) if c.photometric else None for c in self.configs]
        return tuple(ViewDraws(g, p) for g, p in zip(geometry, photometric, strict=True))

    def draw_each(self, height: int, width: int, generators: list[torch.Generator]) -> tuple[ViewDraws, ViewDraws]:
        draws = [self.draw(1, height, width, generator) for generator in generators]
        return tuple(_cat([d[view] for d in draws]) for view in range(2))

    def render(self, images: torch.Tensor, draws: tuple[ViewDraws, ViewDraws]) -> tuple[View, View]:
        if images.ndim != 4:
            raise ValueError(f"images must be [B, C, H, W], got {list(images.shape)}")
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        views = []
        for config, drawn in zip(self.configs, draws, strict=True):
            geometry, params = drawn.geometry, drawn.photometric
            out = crop_resize(pixels, geometry.boxes, geometry.flips, config.out_size, config.antialias)
            if params is not None:
                if out.shape[1] != 3:
                    raise ValueError(f"photometric augmentation needs 3 channels, got {out.shape[1]}")
                if config.blur_law == "release":  # source pixels -> this view's pixels
                    params = _replace_sigma(params, params.sigma * _view_scale(geometry.boxes, config.out_size))
                out = apply_photometric(out, params, config)
            crop_draws = None if geometry.crop_draws is None else geometry.crop_draws.to(images.device)
            views.append(View(out, geometry.boxes.to(images.device), geometry.flips.to(images.device), crop_draws))
        return views[0], views[1]

    @staticmethod
    def _draw_geometry(config: ViewConfig, n: int, height: int, width: int, generator: torch.Generator) -> Geometry:
        crop_draws = None
        if not config.random_crop:
            boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]]).expand(n, 4).clone()
        elif config.crop_law == "square":
            boxes, crop_draws = draw_square_boxes(n, height, width, config.side_scale, generator)
        else:
            boxes = draw_crop_boxes(n, height, width, config.scale, config.ratio, generator)
        flips = torch.rand(n, generator=generator) < config.flip_p
        if config.vflip_p > 0:  # drawn only when asked: without it a seed draws exactly as before
            flips = torch.stack([flips, torch.rand(n, generator=generator) < config.vflip_p], dim=1)
        return Geometry(boxes, flips, crop_draws)


def _check_generator(generator: torch.Generator) -> None:
    if generator.device.type != "cpu":
        raise ValueError("the generator must be a CPU torch.Generator (parameters are drawn on the CPU)")


def _image_size(images: torch.Tensor) -> tuple[int, int]:
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got {list(images.shape)}")
    return images.shape[-2], images.shape[-1]


def _view_scale(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Output pixels per source pixel of each box ``[B]`` (the geometric mean of the two axes)."""
    h, w = size
    return torch.sqrt(h / (boxes[:, 3] - boxes[:, 1]) * (w / (boxes[:, 2] - boxes[:, 0])))


def _replace_sigma(params: Photometric, sigma: torch.Tensor) -> Photometric:
    return Photometric(params.jitter_on, params.factors, params.order, params.grayscale, params.blur, sigma)
