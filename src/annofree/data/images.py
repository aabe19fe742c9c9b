"""Reading images the way users have them: grey, palette, RGBA, 16-bit, EXIF-rotated.

:func:`load_image` and :func:`decode_image` read files and bytes into ``uint8 [H, W, 3]``;
:func:`to_pixel_batch` turns whatever a user hands the segmenters (a path, a PIL image, an array or tensor of
any common dtype and channel count, or a list of them) into the float ``[B, 3, H, W]`` in [0, 1] they compute on.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from annofree.errors import UserError

# What the segmenters take as one image (see ``to_pixel_batch``).
ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
CHANNELS = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}
LAYOUTS = "[H, W], [H, W, C] or [C, H, W] with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)"
FLOAT_TOLERANCE = 1e-3  # float pixels this far outside [0, 1] (resampling overshoot) are clipped, not refused

# Refuse decompression bombs, but allow large real photos (Pillow's own default warns at ~89 Mpx).
Image.MAX_IMAGE_PIXELS = 200_000_000


def to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image in any mode -> ``uint8 [H, W, 3]``, upright (EXIF orientation applied)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale by the type's range rather than clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        grey = ((array - low) / (high - low or 1.0) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels on white, as viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded bytes -> ``uint8 [H, W, 3]``; a clear ``UserError`` naming ``name`` if they are not an image."""
    buffer = io.BytesIO(data)
    try:
        with Image.open(buffer) as image:
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not a readable image (an unknown format, or not an image at all)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow's messages may hold the repr of the buffer ("<_io.BytesIO object at 0x...>"): the name says more.
        detail = str(exc).replace(repr(buffer), "the file").splitlines()[0] if str(exc) else ""
        raise UserError(f"{name}: not a readable image ({exc.__class__.__name__}: {detail})") from None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file -> ``uint8 [H, W, 3]``; a clear ``UserError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    return decode_image(path.read_bytes(), str(path))


# ----------------------------------------------------------------------------- images as the segmenters take them


def to_pixel_batch(images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
    """Images as users have them -> float32 ``[B, 3, H, W]`` in [0, 1] (a tensor stays on its device).

    One image is a path (read with :func:`load_image`), a PIL image (any mode, EXIF orientation applied), or a
    numpy array or torch tensor ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C = 1 (grey), 2 (grey + alpha),
    3 (RGB) or 4 (RGBA); a leading batch dimension is allowed. Numpy arrays are read channels-last and torch
    tensors channels-first (torchvision's layout) when both would fit. Values by dtype: uint8 0-255, uint16
    0-65535, bool, floats in [0, 1]; other integer types 0-255, or 0-65535 when above 255. Transparent pixels
    are composited on white (as :func:`to_rgb`). A list holds images of one size. Anything else is a
    one-line ``UserError``.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise UserError("no images given")
        parts = []
        for index, image in enumerate(images):
            try:
                parts.append(_one_pixel_batch(image))
            except UserError as exc:
                raise UserError(f"image {index} of the batch: {exc}" if len(images) > 1 else str(exc)) from None
        sizes = {tuple(int(n) for n in p.shape[-2:]) for p in parts}
        if len(sizes) > 1:
            raise UserError(f"images of one batch must have one size (height, width), got {sorted(sizes)}")
        devices = {p.device for p in parts}
        if len(devices) > 1:
            raise UserError(f"images of one batch must be on one device, got {sorted(map(str, devices))}")
        return torch.cat(parts)
    return _one_pixel_batch(images)


def _one_pixel_batch(image: ImageInput) -> torch.Tensor:
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif isinstance(image, Image.Image):
        image = to_rgb(image)
    if isinstance(image, np.ndarray):
        return _composite(_channels_first(_unit_float(_numpy_to_torch(image)), prefer_last=True))
    if isinstance(image, torch.Tensor):
        return _composite(_channels_first(_unit_float(image.detach()), prefer_last=False))
    raise UserError(
        f"cannot segment a {type(image).__name__}: give an image file path, a PIL image, or a numpy array or torch "
        f"tensor {LAYOUTS}"
    )


def _numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    """Torch has no unsigned types wider than 8 bits for all operations: uint16 is read as 16-bit here."""
    if array.dtype == np.uint16:
        return torch.from_numpy(array.astype(np.float32) / 65535.0)
    if array.dtype.kind == "u" and array.dtype.itemsize > 1:
        array = array.astype(np.int64)
    if array.dtype.kind not in "biuf":
        raise UserError(f"image arrays must hold numbers (uint8, uint16, bool or float), got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _unit_float(x: torch.Tensor) -> torch.Tensor:
    """Pixel values by dtype -> float32 in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.dtype == torch.bool:
        return x.float()
    if x.dtype == getattr(torch, "uint16", None):
        return x.to(torch.int32).float() / 65535.0
    if x.numel() == 0:
        raise UserError(f"empty image (shape {tuple(x.shape)})")
    if x.is_floating_point():
        x = x.float()
        if not bool(torch.isfinite(x).all()):
            raise UserError("float image holds NaN or infinite values")
        low, high = (float(v) for v in torch.aminmax(x))
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            hint = "; divide 0-255 values by 255" if high <= 255 else ""
            raise UserError(f"float image values must lie in [0, 1], got [{low:g}, {high:g}]{hint}")
        return x.clamp(0.0, 1.0)
    if x.is_complex():
        raise UserError(f"image arrays must hold real numbers, got dtype {x.dtype}")
    low, high = (int(v) for v in torch.aminmax(x))
    if low < 0 or high > 65535:
        raise UserError(f"integer image values must lie in 0-255 (8-bit) or 0-65535 (16-bit), got {low} to {high}")
    return x.float() / (255.0 if high <= 255 else 65535.0)


def _channels_first(x: torch.Tensor, prefer_last: bool) -> torch.Tensor:
    """``[H, W]``, ``[H, W, C]``, ``[C, H, W]`` or their batches -> ``[B, C, H, W]``."""
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim in (3, 4):
        last, first = int(x.shape[-1]) in CHANNELS, int(x.shape[-3]) in CHANNELS
        if last and (prefer_last or not first):
            x = x.movedim(-1, -3)
        elif not first:
            raise UserError(f"an image must be {LAYOUTS}, got shape {tuple(x.shape)}")
        if x.ndim == 3:
            x = x[None]
    else:
        raise UserError(f"an image must be {LAYOUTS} (or a batch of them), got shape {tuple(x.shape)}")
    if x.shape[-2] < 1 or x.shape[-1] < 1 or x.shape[0] < 1:
        raise UserError(f"empty image (shape {tuple(x.shape)})")
    return x


def _composite(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` with C channels (see ``CHANNELS``) -> RGB ``[B, 3, H, W]``, alpha composited on white."""
    channels = int(x.shape[1])
    colour = x[:, : channels - 1] if channels in (2, 4) else x
    if channels in (2, 4):
        alpha = x[:, -1:]
        colour = colour * alpha + (1.0 - alpha)
    return colour.expand(-1, 3, -1, -1).contiguous() if colour.shape[1] == 1 else colour.contiguous()
