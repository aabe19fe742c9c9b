"""Reading images the way users have them: grey, palette, RGBA, 16-bit, EXIF-rotated."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from annofree.errors import UserError

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
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"{name}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file -> ``uint8 [H, W, 3]``; a clear ``UserError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    return decode_image(path.read_bytes(), str(path))
