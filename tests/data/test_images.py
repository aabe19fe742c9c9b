"""Images as users have them: files (a broken one named), and every array, tensor and PIL form the segmenters take."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from annofree.data.images import decode_image, load_image, to_pixel_batch
from annofree.errors import UserError


def _rgb(height=5, width=7, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _reference(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def test_a_broken_file_is_named_never_a_buffer(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(UserError) as caught:
        load_image(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: not a readable image") and "BytesIO" not in message and "0x" not in message
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    with pytest.raises(UserError, match=r"^cut\.png: not a readable image") as caught:
        decode_image(data[: len(data) // 2], "cut.png")
    assert "BytesIO" not in str(caught.value) and "\n" not in str(caught.value)


OPAQUE = 255  # the alpha of an opaque pixel, 8-bit
FORMS = {  # one RGB image in every form a user may hold it
    "uint8": lambda rgb: rgb,
    "uint16": lambda rgb: rgb.astype(np.uint16) * 257,  # 16-bit: 255 -> 65535
    "float32": lambda rgb: rgb.astype(np.float32) / 255,
    "float64": lambda rgb: rgb.astype(np.float64) / 255,
    "int64": lambda rgb: rgb.astype(np.int64),  # e.g. np.array of Python ints: 0-255
    "tensor-hwc": lambda rgb: torch.from_numpy(rgb),  # a uint8 tensor as numpy lays it out
    "tensor-chw": lambda rgb: torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,  # torchvision's layout
    "half": lambda rgb: torch.from_numpy(rgb).permute(2, 0, 1).half() / 255,
    "array-chw": lambda rgb: np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / 255,
    "pil": lambda rgb: Image.fromarray(rgb),
    "rgba": lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], OPAQUE, np.uint8)]),
    "pil-rgba": lambda rgb: Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], OPAQUE, np.uint8)])),
}


@pytest.mark.parametrize("convert", list(FORMS.values()), ids=list(FORMS))
def test_every_form_of_one_rgb_image_gives_the_same_pixels(convert):
    rgb = _rgb()
    pixels = to_pixel_batch(convert(rgb))
    assert pixels.dtype == torch.float32 and pixels.shape == (1, 3, 5, 7)
    torch.testing.assert_close(pixels, _reference(rgb), atol=1e-3, rtol=0)


def test_grey_grey_alpha_and_bool_images():
    grey = _rgb()[..., 0]
    expected = _reference(np.repeat(grey[..., None], 3, axis=2))
    for image in (grey, grey[..., None], grey[None], Image.fromarray(grey), grey.astype(np.float32) / 255):
        torch.testing.assert_close(to_pixel_batch(image), expected, atol=1e-6, rtol=0)
    # Transparency is composited on white, as image viewers (and load_image) show it.
    alpha = np.zeros_like(grey)
    alpha[:, :3] = 255
    composed = to_pixel_batch(np.dstack([grey, alpha]))
    torch.testing.assert_close(composed[..., :3], expected[..., :3])
    assert bool((composed[..., 3:] == 1).all())
    rgba = np.dstack([_rgb(), alpha])
    torch.testing.assert_close(to_pixel_batch(rgba), _reference(load_rgba_as_viewer(rgba)), atol=1e-6, rtol=0)
    mask = grey > 128
    torch.testing.assert_close(to_pixel_batch(mask), torch.from_numpy(mask).float()[None, None].expand(1, 3, -1, -1))


def load_rgba_as_viewer(rgba: np.ndarray) -> np.ndarray:
    """The RGB that load_image gives for an RGBA file (composited on white)."""
    from annofree.data.images import to_rgb

    return to_rgb(Image.fromarray(rgba))


def test_paths_and_lists(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    torch.testing.assert_close(to_pixel_batch(tmp_path / "a.png"), _reference(rgb))
    torch.testing.assert_close(to_pixel_batch(str(tmp_path / "a.png")), _reference(rgb))
    batch = to_pixel_batch([tmp_path / "a.png", rgb, Image.fromarray(rgb)])
    torch.testing.assert_close(batch, _reference(rgb).expand(3, -1, -1, -1))
    torch.testing.assert_close(to_pixel_batch(np.stack([rgb, rgb])), _reference(rgb).expand(2, -1, -1, -1))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"pixels": 1}, r"cannot segment a dict: give an image file path, a PIL image, or a numpy array"),
        ("missing.png", r"missing.png: no such image file"),
        (
            np.zeros((5, 7, 9), np.uint8),
            r"an image must be \[H, W\], \[H, W, C\] or \[C, H, W\] .*got shape \(5, 7, 9\)",
        ),
        (np.zeros((2, 2, 5, 7, 3), np.uint8), r"or a batch of them\), got shape \(2, 2, 5, 7, 3\)"),
        (np.full((5, 7, 3), 255.0, np.float32), r"float image values must lie in \[0, 1\], got \[255, 255\]; divide"),
        (np.full((5, 7), np.nan, np.float32), r"NaN or infinite"),
        (np.full((5, 7), -3, np.int32), r"integer image values must lie in 0-255 \(8-bit\) or 0-65535"),
        (np.zeros((0, 7, 3), np.uint8), r"empty image"),
        (np.array([["a"]]), r"must hold numbers"),
        ([], r"no images given"),
        ([np.zeros((5, 7), np.uint8), np.zeros((6, 7), np.uint8)], r"one size"),
        ([np.zeros((5, 7), np.uint8), "nowhere.jpg"], r"image 1 of the batch: nowhere.jpg: no such image file"),
    ],
    ids=["dict", "path", "channels", "ndim", "float-255", "nan", "negative", "empty", "strings", "none", "sizes", "1"],
)
def test_anything_else_is_one_line_naming_what_to_give(image, message):
    with pytest.raises(UserError, match=message) as caught:
        to_pixel_batch(image)
    assert "\n" not in str(caught.value)


def test_16_bit_integers_above_255_scale_by_65535():
    wide = np.array([[0, 1000, 65535]], dtype=np.int32)
    torch.testing.assert_close(to_pixel_batch(wide)[0, 0, 0], torch.tensor([0.0, 1000 / 65535, 1.0]))
    small_float_overshoot = np.array([[-1e-4, 1.0 + 1e-4]], dtype=np.float32)  # resampling overshoot is clipped
    assert to_pixel_batch(small_float_overshoot).tolist()[0][0] == [[0.0, 1.0]]
