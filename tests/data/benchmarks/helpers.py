"""Writing tiny benchmark data sets in their real layouts, and checking what a reader returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from annofree.data.benchmarks.base import BenchmarkDataset


@dataclass
class Fixture:
    """A written data set: ``open(root, skip_bad=...)`` reads it; ``expected`` maps each sample name, in the
    order the reader must give, to (image colour, label ids); ``split_list`` is its list file, if it has one."""

    root: Path
    open: Callable[..., BenchmarkDataset]
    expected: dict[str, tuple[tuple[int, int, int], np.ndarray]] = field(default_factory=dict)
    split_list: Path | None = None


def write_image(path: Path, height: int, width: int, colour: tuple[int, int, int]) -> None:
    """A flat-colour photo (JPEG or PNG by suffix), so that JPEG keeps it within a level or two."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), colour, dtype=np.uint8)).save(path, quality=95)


def write_label(path: Path, raw: np.ndarray, palette: np.ndarray | None = None) -> None:
    """A raw label PNG: grey (mode L) or, with ``palette`` (``uint8 [256, 3]``), a palette PNG (mode P)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if palette is None:
        image = Image.fromarray(raw)  # uint8 2-D -> mode L
    else:
        image = Image.frombytes("P", (raw.shape[1], raw.shape[0]), raw.tobytes())
        image.putpalette(palette.astype(np.uint8).ravel().tolist())
    image.save(path)


def raw_label(rng: np.random.Generator, height: int, width: int, values: list[int]) -> np.ndarray:
    """A label of the given raw values, every one of them present."""
    raw = rng.choice(np.array(values, dtype=np.uint8), size=(height, width))
    raw.ravel()[: len(values)] = values
    return raw


def by_hand(raw: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Decode ``raw`` pixel by pixel with a table written out in the test."""
    return np.array([[mapping[int(value)] for value in row] for row in raw], dtype=np.uint8)


def assert_reads(dataset: BenchmarkDataset, fixture: Fixture) -> None:
    """The reader gives exactly the expected samples, in order, each image paired with its own label."""
    assert dataset.names == list(fixture.expected)
    assert len(dataset) == len(fixture.expected)
    for index, (name, (colour, ids)) in enumerate(fixture.expected.items()):
        got_name, image, label = dataset[index]
        assert got_name == name
        assert image.dtype == np.uint8 and image.shape == (*ids.shape, 3)
        assert np.abs(image.astype(int) - colour).max() <= 3, f"{name}: not its own image"
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, ids, err_msg=name)
