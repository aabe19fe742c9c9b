"""One dataset class for every benchmark layout: a list of (name, image, label) files, the class names, and how
the label PNGs' raw values become class ids.

The public benchmarks differ in where their files live and in what the label values mean (VOC's 255 border,
ADE20K's 0 = "other", Cityscapes' label ids, COCO-Stuff's fine ids), but once the files are listed they read
the same way: the image upright as RGB, the label PNG's raw 8-bit values (palette indices for mode P) mapped
through a 256-entry lookup table to class ids, 255 = ignore. So each data set module only lists its files and
chooses a ``LabelDecoding``; reading, checking and skipping live here, with the same behaviour as the generic
``SegmentationFolder``: structure problems (a missing folder or split list) always raise ``UserError``; a
missing image or label, an unreadable file, a raw value the data set never uses, or a label whose size differs
from its image raise ``UserError`` naming the file, or, with ``skip_bad=True``, are left out up front, logged
once as a warning and listed in ``skipped``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annofree.data.folder import IGNORE_INDEX, MAX_CLASSES, read_label
from annofree.data.images import load_image
from annofree.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LabelDecoding:
    """Raw label PNG values -> class ids: ``table`` (``uint8 [256]``) maps each raw value to a class id or 255
    (ignore); ``valid`` (``bool [256]``) marks the raw values the data set uses, so that a label holding any
    other value (a wrong file, a colour image saved as grey) is an error rather than silently ignored."""

    table: np.ndarray
    valid: np.ndarray

    def __post_init__(self):
        if self.table.shape != (256,) or self.table.dtype != np.uint8:
            raise ValueError(f"table must be uint8 [256], got {self.table.dtype} {list(self.table.shape)}")
        if self.valid.shape != (256,) or self.valid.dtype != bool:
            raise ValueError(f"valid must be bool [256], got {self.valid.dtype} {list(self.valid.shape)}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[int, int], also_valid: Iterable[int] = ()) -> LabelDecoding:
        """Raw value -> class id for the values in ``mapping``; ``also_valid`` values may occur and are ignored;
        any other value is invalid. Raw 255 is valid (and ignored) unless ``mapping`` says otherwise."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        valid = np.zeros(256, dtype=bool)
        valid[IGNORE_INDEX] = True
        for raw in also_valid:
            valid[raw] = True
        for raw, class_id in mapping.items():
            if not (0 <= raw <= 255 and (0 <= class_id < MAX_CLASSES or class_id == IGNORE_INDEX)):
                raise ValueError(f"bad entry {raw} -> {class_id} (raw 0..255, ids 0..254 or 255)")
            table[raw], valid[raw] = class_id, True
        return cls(table, valid)

    @classmethod
    def identity(cls, num_classes: int) -> LabelDecoding:
        """Labels that already hold class ids ``0..num_classes-1``, 255 = ignore."""
        return cls.from_mapping({raw: raw for raw in range(num_classes)})

    @classmethod
    def reduce_zero(cls, num_classes: int) -> LabelDecoding:
        """mmsegmentation's ``reduce_zero_label``: raw 0 (background, or ADE20K's "other") is ignored and raw
        ``1..num_classes`` become ids ``0..num_classes-1``; 255 stays ignore."""
        return cls.from_mapping({raw: raw - 1 for raw in range(1, num_classes + 1)}, also_valid=(0,))

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Decode a raw ``uint8 [H, W]`` label read from ``path``; invalid values are a ``UserError`` naming it."""
        values = np.unique(raw)
        bad = values[~self.valid[values]]
        if bad.size:
            shown = ", ".join(str(int(value)) for value in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise UserError(f"{path}: values {shown} do not occur in this data set's labels (a wrong file?)")
        return self.table[raw]


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its label; ``decoding`` overrides the data set's (e.g. Cityscapes' train-id PNGs)."""

    name: str
    image: Path
    label: Path
    decoding: LabelDecoding | None = None


class BenchmarkDataset:
    """A benchmark split as a sequence of ``(name, image uint8 [H, W, 3], label uint8 [H, W])``: the image
    upright RGB, the label class ids with 255 = ignore, in the order the data set lists them.

    ``classes`` names the ids; ``background`` says whether id 0 is a background class; ``things`` holds the
    names of the thing classes where the data set splits its classes into things and stuff (None otherwise);
    ``title`` is a short description for logs and reports. ``skip_bad``/``skipped`` as in the module docstring.
    """

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str],
        samples: Iterable[Sample],
        decoding: LabelDecoding,
        *,
        background: bool = False,
        things: Iterable[str] | None = None,
        title: str = "",
        skip_bad: bool = False,
    ):
        self.root = Path(root)
        self.classes = list(classes)
        self.background = background
        self.things = None if things is None else frozenset(things)
        self.title = title or str(self.root)
        self.decoding = decoding
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []
        self._check_classes()
        self._samples = self._paired(samples)
        if skip_bad:
            self._samples = [sample for sample in self._samples if self._readable(sample)]
            if self.skipped:
                logger.warning("%s: skipped %d bad pairs (first: %s)", self.root, len(self.skipped), self.skipped[0][1])
        if not self._samples:
            detail = f" ({len(self.skipped)} bad pairs skipped)" if self.skipped else ""
            raise UserError(f"{self.root}: no image/label pairs for {self.title}{detail}")

    @property
    def names(self) -> list[str]:
        return [sample.name for sample in self._samples]

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray]:
        sample = self._samples[index]
        return (sample.name, *self._load(sample))

    def image_path(self, index: int) -> Path:
        return self._samples[index].image

    def label_path(self, index: int) -> Path:
        return self._samples[index].label

    def check(self) -> None:
        """Read every pair, raising ``UserError`` at the first bad one (e.g. before a long evaluation)."""
        for sample in self._samples:
            self._load(sample)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.title!r}, {len(self)} images, {len(self.classes)} classes)"

    def _check_classes(self) -> None:
        if not self.classes or len(self.classes) > MAX_CLASSES or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"need 1..{MAX_CLASSES} distinct class names, got {self.classes}")
        used = np.unique(self.decoding.table)
        if (used[used != IGNORE_INDEX] >= len(self.classes)).any():
            raise ValueError(f"the label decoding gives ids beyond the {len(self.classes)} classes")
        if self.things is not None and not self.things <= set(self.classes):
            raise ValueError(f"things {sorted(self.things - set(self.classes))} are not classes")

    def _paired(self, samples: Iterable[Sample]) -> list[Sample]:
        paired, seen = [], set()
        for sample in samples:
            if sample.name in seen:
                self._problem(sample.name, f"{sample.image}: {sample.name!r} is listed twice")
            elif not sample.image.is_file():
                self._problem(sample.name, f"{sample.image}: no such image (sample {sample.name!r})")
            elif not sample.label.is_file():
                self._problem(sample.name, f"{sample.image}: no label {sample.label}")
            else:
                paired.append(sample)
            seen.add(sample.name)
        return paired

    def _load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        decoding = sample.decoding or self.decoding
        label = decoding(read_label(sample.label), sample.label)
        image = load_image(sample.image)
        if image.shape[:2] != label.shape:
            raise UserError(
                f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} (WxH) but its image {sample.image} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return image, label

    def _problem(self, name: str, message: str) -> None:
        if not self.skip_bad:
            raise UserError(message)
        self.skipped.append((name, message))

    def _readable(self, sample: Sample) -> bool:
        try:
            self._load(sample)
        except UserError as exc:
            self.skipped.append((sample.name, str(exc)))
            return False
        return True


# --------------------------------------------------------------------------------------- layout helpers


def find_root(root: str | Path, subfolders: Sequence[str], markers: Sequence[str], layout: str) -> Path:
    """The folder under ``root`` that holds the data set: ``root/SUB`` for the first of ``subfolders`` (e.g.
    ``"VOCdevkit/VOC2012"``, ``"VOC2012"``, ``""`` for root itself) that contains every one of ``markers``.
    Users point at different levels of the same tree; any of them works. ``layout`` describes the expected
    tree for the error message."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (expected {layout})")
    for sub in subfolders:
        candidate = root / sub if sub else root
        if all((candidate / marker).exists() for marker in markers):
            return candidate
    tried = ", ".join(str(root / sub) if sub else str(root) for sub in subfolders)
    raise UserError(f"{root}: not a {layout} tree (no {', '.join(markers)} in {tried})")


def read_split_list(path: Path, what: str) -> list[str]:
    """Sample names from a split list (one per line, blank lines and surrounding spaces ignored)."""
    if not path.is_file():
        raise UserError(f"{path}: no such split list ({what})")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    names = [name for name in names if name]
    if not names:
        raise UserError(f"{path}: the split list is empty")
    return names


def list_files(folder: Path, suffix: str, what: str) -> list[Path]:
    """The files in ``folder`` whose names end with ``suffix`` (case-sensitive, as in the real data sets),
    sorted; a missing folder or none found is a ``UserError``."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder ({what})")
    files = sorted(path for path in folder.iterdir() if path.name.endswith(suffix) and not path.name.startswith("."))
    if not files:
        raise UserError(f"{folder}: no *{suffix} files ({what})")
    return files


def split_alias(split: str, aliases: Mapping[str, str], known: Iterable[str]) -> str:
    """The folder name for a split: ``aliases`` maps the short names users type (``val``) to the real ones
    (``val2017``); ``known`` lists the real ones, which are also accepted."""
    known = list(known)
    real = aliases.get(split, split)
    if real not in known:
        choices = ", ".join(sorted(set(aliases) | set(known)))
        raise UserError(f"unknown split {split!r} (choose one of: {choices})")
    return real
