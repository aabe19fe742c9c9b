"""Synthetic texture scenes: an unsupervised segmentation benchmark that pixel colours cannot solve.

A variant of :mod:`annofree.data.synth` for self-supervised methods. Each object class is a shape filled
with its own two-tone texture (circles are dotted, squares striped, triangles checkered, crosses wavy);
the two tones, the pattern's scale and orientation, and the background's colours are drawn afresh for
every instance. Class identity is therefore carried by texture and shape only: k-means on raw pixel
colours cannot recover it, while a dense feature that ignores colour and sees patterns can.

Train split: a plain folder of images (``OUT/train/NNNNNNNNN.jpg``), what a user of DenseSiam has.
Val split: the segmentation folder format (``OUT/val``: images, labels, ``classes.txt``) with
``things.txt`` marking the objects as things (the background is stuff).

Every scene is a pure function of ``(seed, split, index)``, as in :mod:`annofree.data.synth`.
"""

from __future__ import annotations

import colorsys
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from annofree.data.folder import write_classes
from annofree.data.synth import _InlinePool, _smooth_noise, scene_rng, shape_mask, write_val_scene

# Class -> the texture its objects always wear. id = position + 1; id 0 is the background.
TEXTURE_CLASSES = {"circle": "dotted", "square": "striped", "triangle": "checkered", "cross": "wavy"}
MIN_TONE_CONTRAST = 0.3  # luma difference of an object's two tones: the pattern survives grayscale views


@dataclass
class TextureSceneConfig:
    size: int = 96
    min_objects: int = 1
    max_objects: int = 3
    min_radius: float = 0.16  # object radius as a fraction of the image size
    max_radius: float = 0.30
    min_visible: float = 0.5  # an occluded object keeps at least this fraction of its area
    max_rotation: float = 30.0  # degrees either way
    min_period: float = 0.0625  # texture period as a fraction of the image size (6 px at 96, 4 px at 64)
    max_period: float = 0.11
    noise_std: float = 5.0  # pixel noise added to the whole image

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(TEXTURE_CLASSES)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """Any hue, saturation and brightness: ``float32 [3]`` in 0..255."""
    hue, sat, val = rng.random(), rng.uniform(0.1, 1.0), rng.uniform(0.15, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255


def luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255


def two_tones(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours whose brightness differs by at least ``MIN_TONE_CONTRAST``."""
    first = random_colour(rng)
    for _ in range(50):
        second = random_colour(rng)
        if abs(luma(first) - luma(second)) >= MIN_TONE_CONTRAST:
            return first, second
    return first, np.full(3, 255.0 if luma(first) < 0.5 else 0.0, dtype=np.float32)


def pattern(rng: np.random.Generator, kind: str, size: int, period: float) -> np.ndarray:
    """A binary pattern ``float32 [S, S]`` in {0, 1} at a random orientation and phase."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle) + rng.uniform(0, period)
    v = -xx * math.sin(angle) + yy * math.cos(angle) + rng.uniform(0, period)
    if kind == "striped":
        return (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    if kind == "checkered":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "dotted":  # round dots on a square lattice
        du = (u / period) % 1 - 0.5
        dv = (v / period) % 1 - 0.5
        return (du**2 + dv**2 < 0.3**2).astype(np.float32)
    if kind == "wavy":  # thin wavy lines
        wave = u + 0.35 * period * np.sin(2 * math.pi * v / (1.5 * period))
        return ((wave / period) % 1 < 0.35).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two random colours blended by smooth noise, with grain: no periodic pattern. ``float32 [S, S, 3]``."""
    blend = _smooth_noise(rng, size, int(rng.integers(2, 6)))[..., None]
    first, second = random_colour(rng), random_colour(rng)
    grain = rng.normal(0, 8, (size, size, 1)).astype(np.float32)
    return first * (1 - blend) + second * blend + grain


@dataclass
class TextureScene:
    image: np.ndarray  # uint8 [S, S, 3]
    label: np.ndarray  # uint8 [S, S]; 0 background, i = classes[i - 1]
    objects: list[dict] = field(default_factory=list)  # class, tones (two RGB), period, in drawing order


def render_texture_scene(rng: np.random.Generator, cfg: TextureSceneConfig) -> TextureScene:
    size, classes = cfg.size, cfg.classes
    image = background(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    owner = np.full((size, size), -1, dtype=np.int64)
    masks: list[np.ndarray] = []
    objects: list[dict] = []
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for kind in rng.choice(len(classes), size=min(count, len(classes)), replace=False):
        mask = _place(rng, cfg, classes[kind], owner, masks)
        if mask is None:
            continue
        period = rng.uniform(cfg.min_period, cfg.max_period) * size
        tone_a, tone_b = two_tones(rng)
        fill = pattern(rng, TEXTURE_CLASSES[classes[kind]], size, period)[..., None]
        image = image * (1 - mask[..., None]) + (tone_a * (1 - fill) + tone_b * fill) * mask[..., None]
        owner = np.where(mask >= 0.5, len(masks), owner)
        masks.append(mask)
        label[mask >= 0.5] = kind + 1
        objects.append({"class": classes[kind], "tones": (tone_a.tolist(), tone_b.tolist()), "period": period})
    image = image + rng.normal(0, cfg.noise_std, image.shape)
    return TextureScene(np.clip(image + 0.5, 0, 255).astype(np.uint8), label, objects)


def _place(
    rng: np.random.Generator, cfg: TextureSceneConfig, kind: str, owner: np.ndarray, masks: list[np.ndarray]
) -> np.ndarray | None:
    """A placement of one shape that keeps every object at least ``min_visible`` visible, or None."""
    size = cfg.size
    for _ in range(20):
        r = rng.uniform(cfg.min_radius, cfg.max_radius) * size
        cx, cy = rng.uniform(r * 0.8, size - r * 0.8, 2)
        mask = shape_mask(kind, size, cx, cy, r, math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation)))
        new_owner = np.where(mask >= 0.5, len(masks), owner)
        areas = [((m >= 0.5).sum(), (new_owner == i).sum()) for i, m in enumerate([*masks, mask])]
        if all(full > 0 and seen >= cfg.min_visible * full for full, seen in areas):
            return mask
    return None


@dataclass
class TextureSummary:
    train_dir: Path | None
    train_images: int
    val_dir: Path | None
    val_images: int
    classes: list[str]


def _train_image(job: tuple[int, int, TextureSceneConfig, str]) -> None:
    seed, index, cfg, root = job
    scene = render_texture_scene(scene_rng(seed, "train", index), cfg)
    Image.fromarray(scene.image).save(Path(root) / f"{index:09d}.jpg", quality=95)


def write_texture_scenes(
    out: str | Path,
    train: int,
    val: int,
    cfg: TextureSceneConfig | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> TextureSummary:
    """Render ``train`` unlabelled scenes into ``out/train/`` and ``val`` labelled ones into ``out/val``.

    The output depends only on ``(seed, cfg)``, not on ``workers``.
    """
    cfg = cfg or TextureSceneConfig()
    if train < 0 or val < 0 or train + val == 0:
        raise ValueError(f"need a positive number of scenes, got train={train}, val={val}")
    out = Path(out)
    workers = workers or min(8, os.cpu_count() or 1)
    summary = TextureSummary(None, 0, None, 0, ["background", *cfg.classes])
    # (split, count, job function, what its jobs start with): held-out scenes go through synth's writer.
    splits = [("train", train, _train_image, ()), ("val", val, write_val_scene, (render_texture_scene,))]
    with multiprocessing.Pool(workers) if workers > 1 else _InlinePool() as pool:
        for split, count, write, prefix in splits:
            if not count:
                continue
            root = out / split
            root.mkdir(parents=True, exist_ok=True)
            if split == "val":
                write_classes(root, summary.classes)
                (root / "things.txt").write_text("\n".join(cfg.classes) + "\n")
            jobs = ((*prefix, seed, i, cfg, str(root)) for i in range(count))
            for _ in tqdm(
                pool.imap(write, jobs, chunksize=32), total=count, desc=f"{split} scenes", disable=not progress
            ):
                pass
            setattr(summary, f"{split}_dir", root)
            setattr(summary, f"{split}_images", count)
    return summary
