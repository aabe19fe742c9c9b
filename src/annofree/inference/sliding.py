"""Sliding-window inference: cover an image with overlapping windows and average their logits.

The window placement follows mmsegmentation's ``slide_inference`` (which the reference evaluation
uses): windows start every ``stride`` pixels and the last one in each direction is shifted back so
that it ends on the image border. Every window therefore has the same size (the window, or the image
side where the image is smaller), which lets several windows share one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Box = tuple[int, int, int, int]  # (top, bottom, left, right), bottom/right exclusive


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window start offsets along one axis; the last window ends exactly at ``size``."""
    count = max(size - window + stride - 1, 0) // stride + 1
    return [max(min(i * stride + window, size) - window, 0) for i in range(count)]


def window_boxes(height: int, width: int, window: int | tuple[int, int], stride: int | tuple[int, int]) -> list[Box]:
    """Boxes ``(top, bottom, left, right)`` of the sliding windows over a ``height x width`` image.

    ``window`` and ``stride`` are an int or ``(h, w)``. A stride larger than the window would leave
    gaps, so it is refused. Boxes are clipped to the image: all have size ``min(window, image side)``.
    """
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if sh > wh or sw > ww:
        raise ValueError(f"stride {(sh, sw)} is larger than the window {(wh, ww)}: windows would leave gaps")
    rows = [(top, min(top + wh, height)) for top in _starts(height, wh, sh)]
    cols = [(left, min(left + ww, width)) for left in _starts(width, ww, sw)]
    return [(top, bottom, left, right) for top, bottom in rows for left, right in cols]


def slide(
    predict: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    batch_size: int = 8,
) -> torch.Tensor:
    """Run ``predict`` on sliding windows of ``pixels [B, C, H, W]`` and average the overlaps.

    ``predict`` maps crops ``[N, C, h, w]`` to logits ``[N, K, h, w]`` at the crop's resolution; up to
    ``batch_size`` windows (of any of the B images) go through it together. Returns ``[B, K, H, W]``.
    """
    batch, _, height, width = pixels.shape
    boxes = window_boxes(height, width, window, stride)
    jobs = [(b, box) for b in range(batch) for box in boxes]
    total: torch.Tensor | None = None
    count = torch.zeros(height, width, device=pixels.device)
    for top, bottom, left, right in boxes:
        count[top:bottom, left:right] += 1
    for start in range(0, len(jobs), max(1, batch_size)):
        chunk = jobs[start : start + max(1, batch_size)]
        crops = torch.stack([pixels[b, :, t:bo, le:r] for b, (t, bo, le, r) in chunk])
        logits = predict(crops)
        if total is None:
            total = logits.new_zeros(batch, logits.shape[1], height, width)
        for (b, (top, bottom, left, right)), crop_logits in zip(chunk, logits, strict=True):
            total[b, :, top:bottom, left:right] += crop_logits
    assert total is not None  # at least one window always exists
    return total / count.to(total.dtype)


__all__ = ["Box", "slide", "window_boxes"]
