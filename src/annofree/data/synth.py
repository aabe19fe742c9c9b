"""Synthetic captioned scenes: data that proves text-supervised segmentation works without any download.

Each scene has a textured background and one to a few objects of several shape classes, with random colours,
sizes, textures, rotations and occlusion. Its caption is written from varied templates, with synonyms for the
shapes and words that name nothing in the image ("photo", "wallpaper", "phone"), and it may mention the
colours, sizes, textures, the background and where the objects are relative to each other. Training uses
only images and captions; the masks exist for the held-out evaluation split.

Every scene is a pure function of ``(seed, split, index)``, so a data set is reproducible and can be
rendered in parallel.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.data.writer import ShardWriter

SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges, exact area

# Class names as used for zero-shot evaluation (id = position + 1; id 0 is the background).
SHAPE_CLASSES = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "crescent")

# Words a caption may use for each class: the class name most often, synonyms sometimes.
SYNONYMS = {
    "circle": ("circle", "circle", "circle", "disk", "dot", "round shape"),
    "square": ("square", "square", "square", "box", "block", "square tile"),
    "triangle": ("triangle", "triangle", "triangle", "wedge", "triangular shape"),
    "star": ("star", "star", "star", "starburst", "star shape"),
    "heart": ("heart", "heart", "heart", "love heart", "heart symbol"),
    "cross": ("cross", "cross", "cross", "plus sign", "plus"),
    "ring": ("ring", "ring", "ring", "donut", "hoop"),
    "crescent": ("crescent", "crescent", "crescent", "moon", "crescent moon"),
}

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "cyan": (40, 200, 220),
    "brown": (130, 80, 40),
    "grey": (130, 130, 130),
}

# Like real object classes (grass is green, bananas are yellow), each shape class has a typical colour that
# its objects take with probability SceneConfig.typical_colour_prob; otherwise any colour. Colour then
# hints at the class but does not decide it, and shape must settle the rest.
TYPICAL_COLOURS = {
    "circle": "red",
    "square": "blue",
    "triangle": "yellow",
    "star": "orange",
    "heart": "pink",
    "cross": "green",
    "ring": "purple",
    "crescent": "cyan",
}

TEXTURES = ("plain", "plain", "plain", "striped", "dotted", "checkered", "shaded")
TEXTURE_WORDS = {"striped": "striped", "dotted": "spotted", "checkered": "checkered", "shaded": "shaded"}

# Background kinds and the words a caption may use for them.
BACKGROUNDS = {
    "grass": ("grass", "a lawn", "green grass"),
    "sky": ("the sky", "a blue sky", "a cloudy sky"),
    "sand": ("sand", "a sandy beach", "the sand"),
    "water": ("water", "the sea", "a lake"),
    "wall": ("a wall", "a painted wall", "concrete"),
    "paper": ("paper", "a sheet of paper", "cardboard"),
    "floor": ("a wooden floor", "wood", "a table"),
    "fabric": ("fabric", "a carpet", "a blanket"),
}

FILLERS_BEFORE = (
    "",
    "",
    "",
    "a photo of",
    "a picture of",
    "an image of",
    "a drawing of",
    "close-up of",
    "my photo of",
    "look at",
    "stock image of",
    "here is",
)
FILLERS_AFTER = (
    "",
    "",
    "",
    "taken with my phone",
    "nice colors",
    "in vintage style",
    "free wallpaper",
    "best art of the year",
    "on a sunny day",
    "by a local artist",
    "#design #art",
    "high quality photo",
    "for my blog",
    "in the morning",
)


@dataclass
class SceneConfig:
    size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    min_radius: float = 0.14  # object radius as a fraction of the image size
    max_radius: float = 0.30
    min_visible: float = 0.45  # an occluded object keeps at least this fraction of its area
    max_rotation: float = 25.0  # degrees either way from upright (objects in photos are mostly upright)
    typical_colour_prob: float = 0.7  # chance that an object takes its class's typical colour
    classes: tuple[str, ...] = SHAPE_CLASSES
    caption_omit_prob: float = 0.0  # chance to leave an object out of the caption (noisy captions)
    noise_std: float = 6.0  # pixel noise added to the whole image


@dataclass
class Scene:
    image: np.ndarray  # uint8 [S, S, 3]
    label: np.ndarray  # uint8 [S, S]; 0 background, i = classes[i - 1]
    caption: str
    objects: list[dict] = field(default_factory=list)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one scene: independent of every other scene and of rendering order."""
    return np.random.default_rng([seed, sum(map(ord, split)) * 7919 + len(split), index])


# ----------------------------------------------------------------------------------------------------------
# Shapes: polygons (or ellipse combinations) drawn on a supersampled mask.


def _polygon(points: np.ndarray, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return [(cx + r * x, cy + r * y) for x, y in rot]


def _star_points(n: int = 5, inner: float = 0.45) -> np.ndarray:
    t = np.arange(2 * n) * math.pi / n - math.pi / 2
    radius = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _heart_points() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    return (pts - pts.mean(axis=0)) / 16.5


_SQUARE = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * 0.8
_TRIANGLE = np.array([[0, -1], [math.sqrt(3) / 2, 0.5], [-math.sqrt(3) / 2, 0.5]], dtype=float) * 1.1
# A plus sign: arm half-width 0.33, arm length 1, corners clockwise from the top arm's left edge.
_CROSS_HALF = [(-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33)]
_CROSS = np.array([*_CROSS_HALF, *[(-x, -y) for x, y in _CROSS_HALF]], dtype=float)  # point-symmetric
_STAR = _star_points()
_HEART = _heart_points()


def shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape, ``float32 [size, size]``."""
    k = SUPERSAMPLE
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = cx * k, cy * k, r * k

    def ellipse(x: float, y: float, rad: float, fill: int) -> None:
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=fill)

    if kind == "circle":
        ellipse(cx, cy, r, 255)
    elif kind == "ring":
        ellipse(cx, cy, r, 255)
        ellipse(cx, cy, r * 0.55, 0)
    elif kind == "crescent":
        ellipse(cx, cy, r, 255)
        ellipse(cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle), r * 0.85, 0)
    else:
        points = {"square": _SQUARE, "triangle": _TRIANGLE, "star": _STAR, "heart": _HEART, "cross": _CROSS}[kind]
        # Hearts stay upright-ish: a tilted heart still reads as a heart, an upside-down one less so.
        turn = angle * 0.15 if kind == "heart" else angle
        draw.polygon(_polygon(points, cx, cy, r, turn), fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------------------------------
# Colours and textures.


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> np.ndarray:
    return np.clip(np.array(rgb, dtype=np.float32) + rng.normal(0, amount, 3), 0, 255)


def background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A textured background ``float32 [S, S, 3]`` of one of the named kinds."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    noise = _smooth_noise(rng, size, int(rng.integers(3, 9)))
    fine = rng.random((size, size)).astype(np.float32)
    base = {
        "grass": (70, 140, 50),
        "sky": (120, 170, 235),
        "sand": (220, 195, 140),
        "water": (40, 100, 150),
        "wall": (175, 170, 160),
        "paper": (235, 230, 215),
        "floor": (150, 100, 60),
        "fabric": (120, 60, 90),
    }[kind]
    colour = _jitter(rng, base, 18)
    if kind == "grass":
        shade = 0.75 + 0.35 * noise + 0.2 * (fine - 0.5)
    elif kind == "sky":
        shade = 0.8 + 0.3 * yy + 0.15 * noise
    elif kind == "water":
        shade = 0.8 + 0.25 * np.sin(2 * math.pi * (yy * rng.uniform(4, 9) + 0.3 * noise)) * 0.5 + 0.15 * noise
    elif kind == "floor":
        shade = 0.8 + 0.2 * np.sin(2 * math.pi * (xx * rng.uniform(3, 7) + 0.5 * noise)) + 0.1 * (fine - 0.5)
    elif kind == "fabric":
        period = rng.uniform(3, 6) / size
        weave = ((np.floor(xx / period) + np.floor(yy / period)) % 2) * 0.15
        shade = 0.85 + weave + 0.1 * noise
    else:  # wall, sand, paper: mostly flat with grain
        shade = 0.9 + 0.15 * noise + 0.12 * (fine - 0.5)
    return np.clip(colour[None, None, :] * shade[..., None], 0, 255)


def texture(rng: np.random.Generator, kind: str, colour: np.ndarray, size: int) -> np.ndarray:
    """The fill of one object, ``float32 [S, S, 3]``: its colour modulated by a pattern."""
    if kind == "plain":
        return np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(3.0, 6.0)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    if kind == "striped":
        pattern = (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    elif kind == "dotted":
        pattern = ((np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period)) > 0.5).astype(np.float32)
    elif kind == "checkered":
        pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    else:  # shaded: a smooth light-to-dark ramp across the object
        pattern = (u - u.min()) / (u.max() - u.min() + 1e-6)
    # The second tone is a darker or lighter version of the colour, never a different hue.
    other = colour * 0.45 if colour.mean() > 110 else colour * 0.5 + 120
    return colour * (1 - pattern[..., None]) + other * pattern[..., None]


# ----------------------------------------------------------------------------------------------------------
# Scenes.


def _place_objects(rng: np.random.Generator, cfg: SceneConfig) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Draw objects one over another, keeping each at least ``min_visible`` visible. -> (objects, cover, ids)."""
    size = cfg.size
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    kinds = rng.choice(len(cfg.classes), size=count, replace=False)
    owner = np.full((size, size), -1, dtype=np.int64)  # which object is on top at each pixel
    masks: list[np.ndarray] = []
    objects: list[dict] = []
    for kind in kinds:
        for _ in range(20):  # rejection sampling of a placement that keeps everything visible enough
            r = rng.uniform(cfg.min_radius, cfg.max_radius) * size
            cx, cy = rng.uniform(r * 0.8, size - r * 0.8, 2)  # mostly inside the frame
            angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
            mask = shape_mask(cfg.classes[kind], size, cx, cy, r, angle)
            new_owner = np.where(mask >= 0.5, len(masks), owner)
            areas = [((m >= 0.5).sum(), (new_owner == i).sum()) for i, m in enumerate([*masks, mask])]
            if all(full > 0 and seen >= cfg.min_visible * full for full, seen in areas):
                owner = new_owner
                masks.append(mask)
                objects.append({"class": cfg.classes[kind], "cx": float(cx), "cy": float(cy), "r": float(r)})
                break
    return objects, np.stack(masks) if masks else np.zeros((0, size, size), np.float32), owner


def _pick_colour(rng: np.random.Generator, behind: np.ndarray, typical: str | None) -> tuple[str, np.ndarray]:
    """A named colour that stands out from what lies behind the object: ``typical`` if it does, else any."""
    if typical is not None:
        colour = _jitter(rng, COLOURS[typical], 10)
        if np.abs(colour - behind).mean() > 45:
            return typical, colour
    names = list(COLOURS)
    for _ in range(20):
        name = names[int(rng.integers(len(names)))]
        colour = _jitter(rng, COLOURS[name], 10)
        if np.abs(colour - behind).mean() > 45:
            return name, colour
    return name, colour


def render_scene(rng: np.random.Generator, cfg: SceneConfig) -> Scene:
    """One scene: image, label map and caption."""
    size = cfg.size
    bg_kind = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    image = background(rng, bg_kind, size)
    objects, masks, owner = _place_objects(rng, cfg)
    label = np.zeros((size, size), dtype=np.uint8)
    for i, (obj, mask) in enumerate(zip(objects, masks, strict=True)):
        behind = (image * mask[..., None]).sum(axis=(0, 1)) / max(mask.sum(), 1e-6)
        typical = TYPICAL_COLOURS.get(obj["class"]) if rng.random() < cfg.typical_colour_prob else None
        obj["colour"], colour = _pick_colour(rng, behind, typical)
        obj["texture"] = TEXTURES[int(rng.integers(len(TEXTURES)))]
        fill = texture(rng, obj["texture"], colour, size)
        image = image * (1 - mask[..., None]) + fill * mask[..., None]
        label[owner == i] = cfg.classes.index(obj["class"]) + 1
    image = image + rng.normal(0, cfg.noise_std, image.shape)
    caption = write_caption(rng, objects, bg_kind, size, cfg.caption_omit_prob)
    return Scene(np.clip(image + 0.5, 0, 255).astype(np.uint8), label, caption, objects)


# ----------------------------------------------------------------------------------------------------------
# Captions.


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _object_phrase(rng: np.random.Generator, obj: dict, size: int) -> str:
    words = []
    if rng.random() < 0.25:
        words.append("small" if obj["r"] < 0.2 * size else "large" if obj["r"] > 0.25 * size else "medium")
    if rng.random() < 0.6:
        words.append(obj["colour"])
    if obj["texture"] in TEXTURE_WORDS and rng.random() < 0.5:
        words.append(TEXTURE_WORDS[obj["texture"]])
    synonyms = SYNONYMS.get(obj["class"], (obj["class"],))
    words.append(synonyms[int(rng.integers(len(synonyms)))])
    phrase = " ".join(words)
    return _article(phrase) if rng.random() < 0.8 else "the " + phrase


def _relation(a: dict, b: dict) -> str:
    dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
    if abs(dx) > abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def _join(rng: np.random.Generator, phrases: list[str], objects: list[dict]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2 and rng.random() < 0.35:
        return f"{phrases[0]} {_relation(objects[0], objects[1])} {phrases[1]}"
    if rng.random() < 0.2:
        return f"{phrases[0]} with " + " and ".join(phrases[1:])
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def write_caption(
    rng: np.random.Generator, objects: list[dict], bg_kind: str, size: int, omit_prob: float = 0.0
) -> str:
    """A varied caption naming the objects (in random order), sometimes the background, plus filler words."""
    order = [int(i) for i in rng.permutation(len(objects))]
    kept = [objects[i] for i in order if not (len(order) > 1 and rng.random() < omit_prob)] or [objects[order[0]]]
    body = _join(rng, [_object_phrase(rng, o, size) for o in kept], kept)
    if rng.random() < 0.45:
        words = BACKGROUNDS[bg_kind]
        preposition = ("on", "against", "over", "in front of")[int(rng.integers(4))]
        body = f"{body} {preposition} {words[int(rng.integers(len(words)))]}"
    before = FILLERS_BEFORE[int(rng.integers(len(FILLERS_BEFORE)))]
    after = FILLERS_AFTER[int(rng.integers(len(FILLERS_AFTER)))]
    caption = " ".join(part for part in (before, body) if part)
    if after:
        caption += (", " if rng.random() < 0.7 else ". ") + after
    return caption[0].upper() + caption[1:] if rng.random() < 0.5 else caption


# ----------------------------------------------------------------------------------------------------------
# Writing a data set: train split as webdataset shards (images and captions only), val split as a
# segmentation folder (images, masks, classes.txt).


@dataclass
class SynthSummary:
    train_pattern: str | None
    train_images: int
    val_dir: Path | None
    val_images: int
    classes: list[str]


def _train_sample(job: tuple[int, int, SceneConfig]) -> tuple[str, bytes, str]:
    seed, index, cfg = job
    scene = render_scene(scene_rng(seed, "train", index), cfg)
    buffer = io.BytesIO()
    Image.fromarray(scene.image).save(buffer, format="JPEG", quality=95)
    return f"{index:09d}", buffer.getvalue(), scene.caption


def write_val_scene(job: tuple[Callable, int, int, Any, str]) -> None:
    """``(render, seed, index, cfg, root)``: render held-out scene ``index`` and write it, with its label map,
    into the segmentation folder ``root`` (a pool job: ``render`` is a module-level function, so it pickles)."""
    render, seed, index, cfg, root = job
    scene = render(scene_rng(seed, "val", index), cfg)
    write_segmentation_sample(root, f"{index:06d}", scene.image, scene.label, image_format="png")


def write_scenes(
    out: str | Path,
    train: int,
    val: int,
    cfg: SceneConfig | None = None,
    seed: int = 0,
    samples_per_shard: int = 1000,
    workers: int | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Render ``train`` scenes into ``out/train/NNNNNN.tar`` (``KEY.jpg`` + ``KEY.txt``, the img2dataset
    layout) and ``val`` scenes into the segmentation folder ``out/val`` (images, labels, classes.txt).

    The output depends only on ``(seed, cfg)``, not on ``workers``: each scene has its own random stream.
    """
    cfg = cfg or SceneConfig()
    if train < 0 or val < 0 or train + val == 0:
        raise ValueError(f"need a positive number of scenes, got train={train}, val={val}")
    out = Path(out)
    workers = workers or min(8, os.cpu_count() or 1)
    summary = SynthSummary(None, 0, None, 0, ["background", *cfg.classes])
    with multiprocessing.Pool(workers) if workers > 1 else _InlinePool() as pool:
        if train:
            with ShardWriter(out / "train", samples_per_shard=samples_per_shard) as writer:
                jobs = ((seed, i, cfg) for i in range(train))
                for key, jpeg, caption in tqdm(
                    pool.imap(_train_sample, jobs, chunksize=64), total=train, desc="train scenes", disable=not progress
                ):
                    writer.write(key, jpeg, caption)
            summary.train_pattern, summary.train_images = writer.pattern, train
        if val:
            summary.val_dir = out / "val"
            write_classes(summary.val_dir, summary.classes)
            jobs = ((render_scene, seed, i, cfg, str(summary.val_dir)) for i in range(val))
            for _ in tqdm(
                pool.imap(write_val_scene, jobs, chunksize=16), total=val, desc="val scenes", disable=not progress
            ):
                pass
            summary.val_images = val
    return summary


class _InlinePool:
    """The part of ``multiprocessing.Pool`` used above, in the calling process (one worker: no start-up cost)."""

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn, jobs, chunksize: int = 1):
        return map(fn, jobs)
