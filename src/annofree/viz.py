"""Pictures of segmentations: a fixed palette, colour label maps, overlays with a legend, side-by-side panels,
and the groups of each GroupViT grouping stage (:func:`grouping_stages`, :func:`groups_panel`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND_COLOR = (0, 0, 0)
# Nineteen well-separated colours (after Sasha Trubetskoy's list), in an order where neighbours differ.
_DISTINCT = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)


@functools.lru_cache(maxsize=8)
def _greedy_palette(num_labels: int) -> np.ndarray:
    """The hand-picked colours, then each next colour the one farthest from all chosen so far."""
    levels = np.linspace(0, 255, 16).round()
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    chosen = [np.array(BACKGROUND_COLOR, dtype=float), *(np.array(c, dtype=float) for c in _DISTINCT)]
    nearest = np.min([np.linalg.norm(grid - c, axis=1) for c in chosen], axis=0)
    while len(chosen) < num_labels:
        pick = grid[int(nearest.argmax())]  # first maximum: deterministic
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(grid - pick, axis=1))
    return np.array(chosen[:num_labels]).astype(np.uint8).reshape(-1, 3)


def palette(num_labels: int) -> np.ndarray:
    """``uint8 [num_labels, 3]``: label 0 (background) black, then fixed distinct colours.

    The same label always gets the same colour. Past the hand-picked colours, each colour is the one
    of a 16-level RGB grid farthest from those before it; past 1024 labels the colours repeat.
    """
    num_labels = max(int(num_labels), 0)
    unique = _greedy_palette(min(num_labels, 1024))
    if num_labels <= len(unique):
        return unique.copy()
    return unique[np.arange(num_labels) % len(unique)]


def label_colors(class_names: Sequence[str]) -> np.ndarray:
    """Colour of each label: black for a leading "background", palette colours for the classes.

    Without a background label, class 0 takes the first real colour rather than black.
    """
    has_background = bool(class_names) and class_names[0].strip().lower() == "background"
    if has_background:
        return palette(len(class_names))
    return palette(len(class_names) + 1)[1:]


def colorize(label_map: np.ndarray, class_names: Sequence[str] | None = None) -> np.ndarray:
    """``[H, W]`` integer labels -> ``uint8 [H, W, 3]`` colours (label 0 black unless ``class_names``
    say it is not a background)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {label_map.shape}")
    if label_map.size and label_map.min() < 0:
        raise ValueError("label map has negative labels")
    top = int(label_map.max()) + 1 if label_map.size else 1
    colors = label_colors(class_names) if class_names is not None else palette(top)
    if top > len(colors):
        raise ValueError(f"label map has label {top - 1} but only {len(colors)} class names")
    return colors[label_map]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels (its fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def overlay(
    image: np.ndarray | Image.Image,
    label_map: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.5,
    legend: bool = True,
) -> Image.Image:
    """The image blended with its label colours, and a legend of the classes present to its right.

    Background pixels are darkened (blended with black); the legend lists each present class with its
    colour and share of the pixels. Its font scales with the image height, so it stays readable for
    thumbnails and for large photos (the legend panel grows taller than a small image if needed).
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    label_map = np.asarray(label_map)
    if label_map.shape != rgb.shape[:2]:
        raise ValueError(f"label map {label_map.shape} does not match the image {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    colors = colorize(label_map, class_names)
    blended = (rgb.astype(np.float32) * (1 - alpha) + colors.astype(np.float32) * alpha + 0.5).astype(np.uint8)
    picture = Image.fromarray(blended)
    if not legend:
        return picture
    counts = np.bincount(label_map.ravel(), minlength=len(class_names))
    present = [i for i in range(len(class_names)) if counts[i] > 0]
    return _with_legend(picture, present, class_names, label_colors(class_names), counts / max(label_map.size, 1))


def _with_legend(
    picture: Image.Image, present: list[int], class_names: Sequence[str], colors: np.ndarray, fractions: np.ndarray
) -> Image.Image:
    height = picture.height
    font_size = int(min(72, max(12, round(height / 28))))
    font = _font(font_size)
    pad = max(4, font_size // 2)
    swatch = font_size
    line = font_size + pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [f"{class_names[i]}  {100 * fractions[i]:.1f}%" for i in present]
    text_width = max((probe.textbbox((0, 0), t, font=font)[2] for t in texts), default=0)
    panel_width = 3 * pad + swatch + text_width
    panel_height = 2 * pad + line * len(texts)
    canvas = Image.new("RGB", (picture.width + panel_width, max(height, panel_height)), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    left = picture.width + pad
    for row, (index, text) in enumerate(zip(present, texts, strict=True)):
        top = pad + row * line
        color = tuple(int(c) for c in colors[index])
        draw.rectangle((left, top, left + swatch, top + swatch), fill=color, outline=(90, 90, 90))
        # Centre the text's ink on the swatch.
        box = draw.textbbox((0, 0), text, font=font)
        text_top = top + (swatch - (box[3] - box[1])) // 2 - box[1]
        draw.text((left + swatch + pad, text_top), text, fill=(0, 0, 0), font=font)
    return canvas


def side_by_side(
    image: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    truth: np.ndarray | None = None,
    min_side: int = 256,
    gap: int = 8,
) -> Image.Image:
    """image | prediction | ground truth (when given), each label map overlaid with its legend.

    Small images are enlarged by an integer factor (nearest neighbour, so pixels stay exact) until their
    longer side reaches ``min_side``, so that the legends stay readable.
    """
    scale = max(1, min_side // max(image.shape[:2]))
    grow = np.ones((scale, scale), dtype=np.uint8)
    big = np.kron(image, grow[..., None])
    panels = [Image.fromarray(big), overlay(big, np.kron(predicted, grow), class_names)]
    if truth is not None:
        panels.append(overlay(big, np.kron(truth, grow), class_names))
    canvas = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)),
                       "white")  # fmt: skip
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


# ----------------------------------------------------------------------------- groups of each grouping stage


def stage_group_maps(soft_assignments: Sequence[Any], grid: tuple[int, int], size: tuple[int, int]) -> list[np.ndarray]:
    """Per grouping stage, ``int64 [B, H, W]``: the group of each pixel after chaining the stages up to it.

    ``soft_assignments`` are the per-stage maps ``[B, S_i, N_i]`` of ``GroupOutput.soft_assignments`` (stage i's
    tokens are stage i-1's groups); ``grid`` is the patch grid ``(h, w)`` and ``size`` the output ``(H, W)``.
    Stage i's patch-to-group weights ``A_1^T ... A_i^T`` (``[B, h*w, S_i]``) are resized bilinearly from the
    grid to ``size`` and each pixel takes its largest (first on ties), as the zero-shot segmenter does with
    the last stage. The resize runs in group chunks, so many groups on a large ``size`` stay cheap in memory.
    """
    import torch

    from annofree.inference.pixels import upsample_argmax

    maps: list[np.ndarray] = []
    chained = None
    for soft in soft_assignments:
        step = torch.as_tensor(soft).float().transpose(1, 2)  # [B, N_i, S_i]
        chained = step if chained is None else chained @ step
        batch, patches, groups = chained.shape
        if patches != grid[0] * grid[1]:
            raise ValueError(f"the first stage assigns {patches} patches, but the grid {grid} has {grid[0] * grid[1]}")
        per_image = chained.transpose(1, 2).reshape(batch, groups, *grid)
        maps.append(np.stack([upsample_argmax(one, tuple(size)).cpu().numpy() for one in per_image]).astype(np.int64))
    return maps


def grouping_stages(
    model: Any, image: np.ndarray, short_side: int | None = None, size: tuple[int, int] | None = None
) -> tuple[list[np.ndarray], list[int]]:
    """The groups of each grouping stage of a GroupViT for one image: per stage an ``int64 [H, W]`` map of
    group ids, and the stage's number of groups.

    ``model`` is a GroupViT or anything with ``encode_groups``, ``normalize_pixels`` and ``config`` (an
    ``OnnxGroupViT``). One pass over the whole image, prepared as the zero-shot segmenter prepares it (shorter
    side resized to ``short_side`` when given, each side fitted to the patch size); the maps are at ``size``
    (default: the image's own size). See :func:`stage_group_maps`.
    """
    import torch

    from annofree.inference.pixels import (
        eval_mode,
        fit_to_patches,
        input_device_dtype,
        resize_short_side,
        to_pixel_batch,
    )

    pixels = to_pixel_batch(image)
    size = tuple(size) if size is not None else (int(pixels.shape[-2]), int(pixels.shape[-1]))
    device, dtype = input_device_dtype(model)
    pixels = pixels.to(device=device, dtype=torch.float32)
    if short_side:
        pixels = resize_short_side(pixels, int(short_side))
    with eval_mode(model):
        pixels = model.normalize_pixels(pixels).to(dtype)
        out = model.encode_groups(fit_to_patches(pixels, int(model.config.image.patch_size)))
    soft = [s.detach().cpu() for s in out.soft_assignments]
    maps = [stage[0] for stage in stage_group_maps(soft, out.grid, size)]
    return maps, [int(s.shape[1]) for s in soft]


def group_colors(num_groups: int) -> np.ndarray:
    """``uint8 [num_groups, 3]``: a distinct colour per group (the palette without its black)."""
    return palette(num_groups + 1)[1:]


def colorize_groups(group_map: np.ndarray, num_groups: int | None = None) -> np.ndarray:
    """``[H, W]`` group ids -> ``uint8 [H, W, 3]``, one distinct colour per group (group g: ``group_colors()[g]``)."""
    group_map = np.asarray(group_map)
    if group_map.ndim != 2:
        raise ValueError(f"group map must be [H, W], got shape {group_map.shape}")
    top = int(group_map.max()) + 1 if group_map.size else 1
    num_groups = top if num_groups is None else int(num_groups)
    if top > num_groups or (group_map.size and group_map.min() < 0):
        raise ValueError(f"group ids must lie in [0, {num_groups}), got up to {top - 1}")
    return group_colors(num_groups)[group_map]


def _titled(picture: Image.Image, title: str) -> Image.Image:
    font_size = int(min(48, max(12, round(picture.width / 22))))
    font = _font(font_size)
    pad = max(3, font_size // 3)
    canvas = Image.new("RGB", (picture.width, picture.height + font_size + 2 * pad), "white")
    ImageDraw.Draw(canvas).text((pad, pad), title, fill=(0, 0, 0), font=font)
    canvas.paste(picture, (0, font_size + 2 * pad))
    return canvas


def groups_panel(
    image: np.ndarray,
    stage_maps: Sequence[np.ndarray],
    num_groups: Sequence[int] | None = None,
    alpha: float = 0.6,
    min_side: int = 256,
    gap: int = 8,
    titles: bool = True,
) -> Image.Image:
    """image | stage 1 groups | stage 2 groups | ..., side by side (the GroupViT paper's figures).

    Each stage's groups are coloured (group g of a stage: ``group_colors(num_groups[stage])[g]``) and blended
    over the image with ``alpha`` (1: the colours alone). A title above each tile names the stage, its
    number of groups and how many of them own pixels. Small images are enlarged by an integer factor
    (nearest neighbour) until their longer side reaches ``min_side``.
    """
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    counts = list(num_groups) if num_groups is not None else [int(np.max(m)) + 1 for m in stage_maps]
    if len(counts) != len(stage_maps):
        raise ValueError(f"{len(stage_maps)} stage maps but {len(counts)} group counts")
    scale = max(1, min_side // max(rgb.shape[:2]))
    grow = np.ones((scale, scale), dtype=np.uint8)
    big = np.kron(rgb, grow[..., None])
    tiles = [(Image.fromarray(big), "image")]
    for stage, (group_map, count) in enumerate(zip(stage_maps, counts, strict=True), start=1):
        group_map = np.asarray(group_map)
        if group_map.shape != rgb.shape[:2]:
            raise ValueError(f"stage {stage}: group map {group_map.shape} does not match the image {rgb.shape[:2]}")
        colors = colorize_groups(np.kron(group_map, grow), count).astype(np.float32)
        blended = (big.astype(np.float32) * (1 - alpha) + colors * alpha + 0.5).astype(np.uint8)
        used = len(np.unique(group_map))
        tiles.append((Image.fromarray(blended), f"stage {stage}: {count} groups, {used} used"))
    pictures = [_titled(tile, title) if titles else tile for tile, title in tiles]
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    return canvas


__all__ = [
    "BACKGROUND_COLOR",
    "colorize",
    "colorize_groups",
    "group_colors",
    "grouping_stages",
    "groups_panel",
    "label_colors",
    "overlay",
    "palette",
    "side_by_side",
    "stage_group_maps",
]
