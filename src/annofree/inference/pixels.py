"""The pixel helpers every segmenter shares: model mode and device, resizing, the chunked upsampled argmax.

GroupViT's zero-shot segmenter (:mod:`annofree.inference.zero_shot`), DenseSiam's cluster segmenter
(:mod:`annofree.inference.clusters`), the grouping-stage pictures (:mod:`annofree.viz`) and the ONNX export use
these; none of them is about one method. Images come in as anything :func:`annofree.data.images.to_pixel_batch`
reads (``ImageLike``).

Example:
    >>> import torch
    >>> logits = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # [K=2, h=1, w=2]
    >>> upsample_argmax(logits, (2, 4)).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from annofree.data.images import ImageInput, to_pixel_batch
from annofree.inference.resize import ResizeMethod, rescaled_size, resize_pixels

ImageLike = ImageInput  # a path, a PIL image, an array or tensor of any dtype and channel count (to_pixel_batch)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside, the model's previous mode restored after.

    A model that is not a torch module (``OnnxGroupViT``) has no mode: only gradients are turned off.
    """
    if not isinstance(model, nn.Module):
        with torch.no_grad():
            yield
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def input_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's inputs: its first parameter's for a torch module; a model run
    elsewhere (``OnnxGroupViT``) names them as ``device`` and ``dtype`` attributes."""
    if isinstance(model, nn.Module):
        param = next(model.parameters())
        return param.device, param.dtype
    return model.device, model.dtype


def channel_argmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.argmax(dim)`` (the first index wins ties): ``max``'s indices, which torch's CPU kernels find several
    times faster than ``argmax`` along a dimension that is not the last (a 448 x 448 map of 8 groups: 4 ms, not
    23)."""
    return x.max(dim=dim).indices


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[..., h, w]`` resized bilinearly to ``size`` (``align_corners=False``); returned as it is at that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int], max_elements: int = 1 << 25) -> torch.Tensor:
    """``argmax`` over K of ``logits [K, h, w]`` resized bilinearly to ``size``, in class chunks.

    Equal to ``resize(logits).argmax(0)`` (first index wins ties) without holding all K full-size
    maps at once: a 12-Mpx photo with 150 classes would need 7 GB.
    """
    classes = logits.shape[0]
    chunk = max(1, max_elements // max(1, size[0] * size[1]))
    if chunk >= classes:
        return channel_argmax(resize_bilinear(logits[None].float(), size)[0], dim=0)
    best_value = best_index = None
    for start in range(0, classes, chunk):
        part = resize_bilinear(logits[None, start : start + chunk].float(), size)[0]
        value, index = part.max(dim=0)
        index = index + start
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value  # strict: an earlier class keeps a tie, as argmax does
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
    return best_index


def resize_short_side(
    pixels: torch.Tensor, short_side: int, max_long_side: int | None = None, method: ResizeMethod = "antialias"
) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` so that its shorter side is ``short_side`` (or its long side ``max_long_side``
    when that comes first), keeping the aspect ratio; ``method`` as ``annofree.inference.resize``."""
    size = rescaled_size(int(pixels.shape[-2]), int(pixels.shape[-1]), short_side, max_long_side)
    return resize_pixels(pixels, size, method)


def fit_to_patches(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """Resize to the nearest multiple of the patch size on each side (at least one patch).

    The patch embedding would otherwise drop the border pixels that do not fill a patch; resizing
    (rather than padding) keeps every patch on real content, and the grouping maps are resized back
    to the crop's own size afterwards, so the output aligns with the input exactly.
    """
    height, width = pixels.shape[-2:]
    size = (max(1, round(height / patch)) * patch, max(1, round(width / patch)) * patch)
    return resize_bilinear(pixels, size)


def drop_patch_remainder(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """The crop the official patch convolution sees: the right and bottom pixels that do not fill a patch
    dropped (the grouping maps are then stretched over the whole crop). A side shorter than one patch, which
    the official code cannot take, is resized to one patch."""
    height, width = pixels.shape[-2:]
    if height < patch or width < patch:
        return fit_to_patches(pixels, patch)
    return pixels[..., : height // patch * patch, : width // patch * patch]


PATCH_RULES = {"drop": drop_patch_remainder, "fit": fit_to_patches}  # patch_remainder -> what the model sees


__all__ = [
    "PATCH_RULES",
    "ImageLike",
    "channel_argmax",
    "drop_patch_remainder",
    "eval_mode",
    "fit_to_patches",
    "input_device_dtype",
    "resize_bilinear",
    "resize_short_side",
    "to_pixel_batch",
    "upsample_argmax",
]
