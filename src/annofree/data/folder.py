"""The generic segmentation folder: the layout any labelled data set can be converted to for evaluation.

::

    root/
      classes.txt          one class name per line; line i (from 0) names class id i
      images/NAME.jpg      or .jpeg / .png: the photo
      labels/NAME.png      uint8 class ids, single channel (PNG mode L, or P read as its indices),
                           255 = ignore, the same size as the image

Images and labels pair by file name stem. Images are read upright (EXIF orientation applied, as viewers
and the usual evaluation code show them), so a label must match the upright image. Id 0 may be a class
like ``background``; that is the data set's choice, recorded in classes.txt.

Problems raise ``UserError`` naming the file. By default a folder is strict: its structure (classes,
pairing) is checked when it is opened and each pair's contents when it is read, so a bad file stops an
evaluation rather than skewing it silently. With ``skip_bad=True`` every pair is read once up front and
bad pairs are left out; ``skipped`` lists them with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from annofree.data.images import load_image
from annofree.errors import UserError

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
IMAGES_DIR = "images"
LABELS_DIR = "labels"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".png"
IGNORE_INDEX = 255
MAX_CLASSES = 255  # ids 0..254; 255 means ignore
LABEL_MODES = ("L", "P")


def read_classes(path: str | Path) -> list[str]:
    """Class names from a classes.txt (or the folder holding one): line i names id i.

    Surrounding spaces and trailing blank lines are dropped; an empty name, a repeated name or more than
    255 classes is a ``UserError``."""
    path = Path(path)
    if path.is_dir():
        path = path / CLASSES_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such file (the class names, one per line)")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise UserError(f"{path}: no class names")
    first_line: dict[str, int] = {}
    for number, name in enumerate(lines, start=1):
        if not name:
            raise UserError(f"{path}: line {number} is empty (every line from the first names a class)")
        if name in first_line:
            raise UserError(f"{path}: class {name!r} appears twice (lines {first_line[name]} and {number})")
        first_line[name] = number
    if len(lines) > MAX_CLASSES:
        raise UserError(f"{path}: {len(lines)} classes; at most {MAX_CLASSES} fit in 8-bit labels with 255 = ignore")
    return lines


def write_classes(root: str | Path, classes: list[str]) -> Path:
    """Write ``root/classes.txt`` (creating ``root``); returns its path."""
    names = [name.strip() for name in classes]
    if not names:
        raise ValueError("no class names")
    for name in names:
        if not name or "\n" in name or "\r" in name:
            raise ValueError(f"invalid class name {name!r} (empty or several lines)")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated class names in {names}")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} classes; at most {MAX_CLASSES}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / CLASSES_FILE
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return path


def write_segmentation_sample(
    root: str | Path,
    name: str,
    image: np.ndarray,
    label: np.ndarray,
    image_format: str = "png",
    jpeg_quality: int = 95,
) -> tuple[Path, Path]:
    """Write ``images/NAME.{png,jpg}`` (``uint8 [H, W, 3]`` or ``[H, W]``) and ``labels/NAME.png``
    (``uint8 [H, W]`` class ids, PNG mode L) under ``root``; returns both paths. An image of the same name
    in the other format is removed, so that the pair stays unambiguous."""
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"invalid sample name {name!r}")
    image = np.asarray(image)
    label = np.asarray(label)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be uint8 [H, W, 3] or [H, W], got {image.dtype} {list(image.shape)}")
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label must be uint8 [H, W], got {label.dtype} {list(label.shape)}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label is {list(label.shape)} but the image is {list(image.shape[:2])}")
    root = Path(root)
    images, labels = root / IMAGES_DIR, root / LABELS_DIR
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    image_path = images / f"{name}.{image_format}"
    for suffix in IMAGE_SUFFIXES:
        other = images / f"{name}{suffix}"
        if other != image_path:
            other.unlink(missing_ok=True)
    pil = Image.fromarray(np.ascontiguousarray(image))
    if image_format == "png":
        pil.save(image_path, format="PNG")
    else:
        pil.save(image_path, format="JPEG", quality=jpeg_quality)
    label_path = labels / f"{name}{LABEL_SUFFIX}"
    Image.fromarray(np.ascontiguousarray(label)).save(label_path, format="PNG")  # uint8 2-D -> mode L
    return image_path, label_path


def read_label(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """A label map -> ``uint8 [H, W]`` class ids. It must be single-channel 8-bit (mode L, or P whose
    indices are the ids); with ``num_classes``, every value must be a class id or 255."""
    path = Path(path)
    try:
        with Image.open(path) as label:
            if label.mode not in LABEL_MODES:
                raise UserError(
                    f"{path}: a label must be single-channel 8-bit (PNG mode L or P), this one is mode {label.mode}"
                )
            ids = np.array(label, dtype=np.uint8)  # mode P gives the palette indices, not the colours
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path}: not a readable label image ({exc.__class__.__name__}: {exc})") from None
    if num_classes is not None:
        values = np.unique(ids)
        bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            shown = ", ".join(str(int(value)) for value in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise UserError(f"{path}: values {shown} are not class ids (classes.txt names {num_classes}; 255 = ignore)")
    return ids


class SegmentationFolder:
    """A segmentation folder as a sequence of ``(name, image uint8 [H, W, 3], label uint8 [H, W])``,
    sorted by name.

    ``classes`` holds the class names, ``names`` the sample names. Strict by default (see the module
    docstring); ``skip_bad=True`` reads every pair now and keeps the good ones, listing the others in
    ``skipped`` as ``(name, reason)``. A problem with classes.txt is always an error, and so is a folder
    left with no pairs.
    """

    def __init__(self, root: str | Path, skip_bad: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such segmentation folder")
        self.classes = read_classes(self.root / CLASSES_FILE)
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []
        images = self._files(IMAGES_DIR, IMAGE_SUFFIXES)
        labels = self._files(LABELS_DIR, (LABEL_SUFFIX,))
        pairs: list[tuple[str, Path, Path]] = []
        for name in sorted(images.keys() | labels.keys()):
            image_paths, label_paths = images.get(name, []), labels.get(name, [])
            if len(image_paths) > 1:
                self._problem(name, f"{', '.join(map(str, image_paths))}: several images named {name!r}")
            elif not label_paths:
                self._problem(name, f"{image_paths[0]}: no label {self.root / LABELS_DIR / (name + LABEL_SUFFIX)}")
            elif not image_paths:
                self._problem(name, f"{label_paths[0]}: no image {name}{{{','.join(IMAGE_SUFFIXES)}}} in {IMAGES_DIR}/")
            else:
                pairs.append((name, image_paths[0], label_paths[0]))
        if skip_bad:
            pairs = [pair for pair in pairs if self._readable(pair)]
            if self.skipped:
                logger.warning("%s: skipped %d bad pairs (first: %s)", self.root, len(self.skipped), self.skipped[0][1])
        if not pairs:
            detail = f" ({len(self.skipped)} bad pairs skipped)" if self.skipped else ""
            raise UserError(f"{self.root}: no image/label pairs{detail}")
        self._pairs = pairs

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self._pairs]

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray]:
        name, image_path, label_path = self._pairs[index]
        return (name, *self._load(image_path, label_path))

    def image_path(self, index: int) -> Path:
        return self._pairs[index][1]

    def label_path(self, index: int) -> Path:
        return self._pairs[index][2]

    def check(self) -> None:
        """Read every pair, raising ``UserError`` at the first bad one (e.g. before a long evaluation)."""
        for _, image_path, label_path in self._pairs:
            self._load(image_path, label_path)

    def _load(self, image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
        label = read_label(label_path, len(self.classes))
        image = load_image(image_path)
        if image.shape[:2] != label.shape:
            raise UserError(
                f"{label_path}: label is {label.shape[1]}x{label.shape[0]} (WxH) but its image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return image, label

    def _files(self, folder: str, suffixes: tuple[str, ...]) -> dict[str, list[Path]]:
        directory = self.root / folder
        if not directory.is_dir():
            raise UserError(f"{directory}: no such folder (expected {IMAGES_DIR}/ and {LABELS_DIR}/ in {self.root})")
        found: dict[str, list[Path]] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
                found.setdefault(path.stem, []).append(path)
        return found

    def _problem(self, name: str, message: str) -> None:
        if not self.skip_bad:
            raise UserError(message)
        self.skipped.append((name, message))

    def _readable(self, pair: tuple[str, Path, Path]) -> bool:
        name, image_path, label_path = pair
        try:
            self._load(image_path, label_path)
        except UserError as exc:
            self.skipped.append((name, str(exc)))
            return False
        return True
