"""The data sets by the names the command line uses (``annofree evaluate --dataset NAME --root DIR``).

Every entry is called as ``DATASETS[name](root, split=..., skip_bad=..., ...)`` and returns a
``BenchmarkDataset``; ``open_dataset`` adds the split default and a clear error for an unknown name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from annofree.data.benchmarks.ade20k import open_ade20k
from annofree.data.benchmarks.base import BenchmarkDataset, LabelDecoding, Sample
from annofree.data.benchmarks.cityscapes import open_cityscapes
from annofree.data.benchmarks.coco import open_coco_object
from annofree.data.benchmarks.cocostuff27 import open_cocostuff27
from annofree.data.benchmarks.context import open_context, open_context59
from annofree.data.benchmarks.voc import open_voc, open_voc20
from annofree.data.folder import SegmentationFolder
from annofree.errors import UserError


def open_folder(
    root: str | Path, split: str | None = None, background: bool | None = None, skip_bad: bool = False
) -> BenchmarkDataset:
    """The generic segmentation folder (``annofree.data.folder``) with the benchmark interface: ``ROOT`` or,
    with ``split``, ``ROOT/SPLIT``. Id 0 counts as background when ``background`` says so or, by default,
    when class 0 is named "background"; there is no things/stuff split."""
    path = Path(root) / split if split else Path(root)
    folder = SegmentationFolder(path, skip_bad=skip_bad)  # pairs, and with skip_bad reads, every file
    samples = [Sample(name, folder.image_path(i), folder.label_path(i)) for i, name in enumerate(folder.names)]
    if background is None:
        background = folder.classes[0].strip().lower() == "background"
    dataset = BenchmarkDataset(
        path,
        folder.classes,
        samples,
        LabelDecoding.identity(len(folder.classes)),
        background=background,
        title=f"segmentation folder {path} ({len(folder.classes)} classes)",
    )
    dataset.skip_bad, dataset.skipped = skip_bad, list(folder.skipped)
    return dataset


DATASETS: dict[str, Callable[..., BenchmarkDataset]] = {
    "voc": open_voc,
    "voc20": open_voc20,
    "context60": open_context,
    "context59": open_context59,
    "coco-object": open_coco_object,
    "cocostuff27": open_cocostuff27,
    "ade20k": open_ade20k,
    "cityscapes": open_cityscapes,
    "folder": open_folder,
}


def open_dataset(name: str, root: str | Path, split: str | None = None, **kwargs) -> BenchmarkDataset:
    """Open data set ``name`` (a key of ``DATASETS``) at ``root``; ``split=None`` means its usual evaluation
    split (val; the folder itself for ``folder``). Other keyword arguments go to the reader."""
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r} (choose one of: {', '.join(DATASETS)})")
    if split is not None:
        kwargs["split"] = split
    return DATASETS[name](root, **kwargs)
