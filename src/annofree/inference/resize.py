"""Resizing images before inference: the official GroupViT evaluation's law, or annofree's antialiased one.

The official evaluation (mmseg 0.18 ``Resize(img_scale=(2048, 448), keep_ratio=True)``) scales an image by
``min(2048 / long side, 448 / short side)`` and rounds each side with ``int(side * scale + 0.5)``
(:func:`rescaled_size`), then resizes the uint8 image with OpenCV's ``INTER_LINEAR``: bilinear with half-pixel
centres, no antialiasing, 11-bit fixed-point weights and uint8 output (:func:`resize_official`, written here
with torch; it gives OpenCV's bytes). When a photo shrinks a lot, plain bilinear aliases; annofree's own
default for users' photos antialiases then (:func:`resize_antialias`).

    >>> pixels = torch.rand(1, 3, 375, 500)              # float [B, 3, H, W] in [0, 1]
    >>> size = rescaled_size(375, 500, short_side=448, max_long_side=2048)
    >>> resize_pixels(pixels, size, "official").shape
    torch.Size([1, 3, 448, 597])
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_METHODS = ("official", "antialias")
ResizeMethod = Literal["official", "antialias"]
COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: interpolation weights in 1/2048
COEF_ONE = 1 << COEF_BITS


def rescaled_size(height: int, width: int, short_side: int, max_long_side: int | None = None) -> tuple[int, int]:
    """``(height, width)`` with the short side at ``short_side`` unless the long side would pass
    ``max_long_side`` (mmcv's ``rescale_size``: one scale for both sides, each rounded half up, at least 1)."""
    scale = short_side / min(height, width)
    if max_long_side is not None:
        scale = min(scale, max_long_side / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int], method: ResizeMethod) -> torch.Tensor:
    """Float ``[B, C, H, W]`` in [0, 1] resized to ``size`` by ``method`` (``RESIZE_METHODS``); the same
    tensor when the size does not change."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    if method == "official":
        return resize_official(pixels, size)
    if method == "antialias":
        return resize_antialias(pixels, size)
    raise ValueError(f"unknown resize method {method!r} (use one of {', '.join(RESIZE_METHODS)})")


def resize_antialias(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear in floating point, antialiased when a side shrinks (a no-op for a side that grows)."""
    shrinks = size[0] < pixels.shape[-2] or size[1] < pixels.shape[-1]
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=shrinks)


def resize_official(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OpenCV's ``INTER_LINEAR`` on the 8-bit values of float ``[B, C, H, W]`` pixels in [0, 1].

    The pixels are taken as 8-bit (``round(x * 255)``: exact for images read from files) and the result is
    8-bit again, divided by 255. Each row is first interpolated along x with integer weights in 1/2048, then
    the rows along y, rounded as OpenCV's vectorised path does.
    """
    height, width = pixels.shape[-2:]
    x_low, x_high, x_weight_low, x_weight_high = _taps(width, size[1], pixels.device, clamp_weights=True)
    y_low, y_high, y_weight_low, y_weight_high = _taps(height, size[0], pixels.device, clamp_weights=False)
    values = (pixels * 255).round().clamp(0, 255).to(torch.int32)

    def along_x(rows: torch.Tensor) -> torch.Tensor:  # [B, C, h, W] -> [B, C, h, w], weights summing to 2048
        return rows[..., x_low] * x_weight_low + rows[..., x_high] * x_weight_high

    top, bottom = along_x(values[:, :, y_low]), along_x(values[:, :, y_high])
    # OpenCV's VResizeLinearVec_32s8u: ((((a >> 4) * wa) >> 16) + (((b >> 4) * wb) >> 16) + 2) >> 2.
    y_weight_low, y_weight_high = y_weight_low[:, None], y_weight_high[:, None]
    out = ((((top >> 4) * y_weight_low) >> 16) + (((bottom >> 4) * y_weight_high) >> 16) + 2) >> 2
    return out.clamp(0, 255).to(pixels.dtype) / 255


def _taps(source: int, target: int, device: torch.device, clamp_weights: bool):
    """Source indices and integer weights of the two taps of each target pixel along one axis, as OpenCV's
    ``resize`` computes them: half-pixel centres in float32, weights rounded to 1/2048. Along x a tap outside
    the image moves to the border with all the weight (OpenCV's ``xofs``/``alpha``); along y OpenCV keeps the
    fractional weights and repeats the border row, which rounds differently (``clamp_weights=False``)."""
    position = ((np.arange(target) + 0.5) * (source / target) - 0.5).astype(np.float32)
    low = np.floor(position).astype(np.int64)
    fraction = position - low.astype(np.float32)
    if clamp_weights:
        before, after = low < 0, low >= source - 1
        fraction[before | after] = 0
        low = np.where(before, 0, np.where(after, source - 1, low))
    weight_high = np.rint(fraction * np.float32(COEF_ONE)).astype(np.int32)
    weight_low = np.rint((np.float32(1) - fraction) * np.float32(COEF_ONE)).astype(np.int32)
    indices = [np.clip(low, 0, source - 1), np.clip(low + 1, 0, source - 1)]
    return tuple(torch.from_numpy(a).to(device) for a in (*indices, weight_low, weight_high))


__all__ = [
    "RESIZE_METHODS",
    "ResizeMethod",
    "rescaled_size",
    "resize_antialias",
    "resize_official",
    "resize_pixels",
]
