"""Unlabelled images for self-supervised training: a folder of images (or webdataset shards of images) read as
the fixed-size ``uint8`` batches of one epoch for one rank, to be augmented on the GPU (:mod:`annofree.data.views`).

Every image is decoded upright (:func:`annofree.data.images.decode_image`), its short side resized to ``size``
(Pillow, bicubic, anti-aliased) and centre-cropped to ``size x size``; a batch is ``Batch(data=uint8 [B, 3, size,
size], skipped, reasons)`` as in :mod:`annofree.data.shards`. Files that cannot be read or decoded are skipped,
counted in ``Batch.skipped`` under ``corrupt_image`` and the first few logged with their names.

A folder is searched recursively for files ending in one of ``IMAGE_SUFFIXES`` (any case; hidden files and
folders are passed over). The epoch is split like the shard reader's: rank ``r`` of ``R`` with ``W`` DataLoader
workers (``W = 1`` when ``num_workers`` is 0) makes ``C = R * W`` consumers; the file list is permuted with
``(seed, epoch)`` and consumer ``c`` reads positions ``c, c + C, ...`` of its first ``n // C * C`` files, so every
image is read at most once per epoch, by one consumer, and (with no bad files) every consumer makes the same
number of batches of exactly ``batch_size`` (the incomplete last one is dropped). Batches come from the workers
in strict turn and ``skip_batches`` is exact, by the same rules as :func:`annofree.data.shards.image_text_batches`
(see its module docstring). Everything depends on nothing but ``(seed, epoch, rank, world_size, num_workers)``.

Anything else given as data (a brace pattern, tar files, a folder holding shards and no images) is read as
webdataset shards with :func:`~annofree.data.shards.image_text_batches`; captions are then not needed.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

from annofree.data.images import decode_image
from annofree.data.layout import SHARD_SUFFIXES
from annofree.data.sampling import derive_seed
from annofree.data.spec import LoaderSpec
from annofree.data.stream import Batch, _SkipCounter, image_text_batches, stream_batches, worker_stream
from annofree.errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def list_images(root: str | Path) -> list[str]:
    """The image files under ``root`` (recursive), sorted; a ``UserError`` if there are none.

    Pass the result to :func:`image_batches` as ``files`` to list a large folder once rather than every epoch.
    """
    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    files = _scan(root)
    if not files:
        raise UserError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or below it")
    return files


def _scan(root: Path) -> list[str]:
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [os.path.join(folder, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES) and n[0] != "."]
    return sorted(found)


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``uint8 [size, size, 3]``: short side resized to ``size``, centre crop."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_h, new_w) != (height, width):
        resized = Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
        image = np.array(resized)  # writable, as torch.from_numpy wants
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` array -> ``uint8 [3, H, W]`` tensor."""
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def collate_images(images: list[torch.Tensor]) -> torch.Tensor:
    """``[3, S, S]`` tensors -> ``uint8 [B, 3, S, S]``."""
    return torch.stack(images)


def consumer_files(files: list[str], seed: int, epoch: int, consumer: int, consumers: int) -> list[str]:
    """The files that ``consumer`` of ``consumers`` reads in this epoch, in reading order (module docstring)."""
    order = np.random.default_rng(derive_seed("folder-order", seed, epoch)).permutation(len(files))
    usable = len(files) // consumers * consumers  # the same count for every consumer
    return [files[index] for index in order[consumer:usable:consumers]]


def image_batches(
    spec: LoaderSpec,
    size: int,
    files: list[str] | None = None,
    shuffle_buffer: int = 1000,
    exact_skip: bool = True,
) -> Iterator[Batch]:
    """The batches of one epoch for one rank: ``Batch(data=uint8 [batch_size, 3, size, size], skipped, reasons)``.

    ``spec.data`` is a folder of images, or webdataset shards of images (anything that
    :func:`~annofree.data.shards.expand_shards` accepts; ``shuffle_buffer`` applies to them only). ``files``
    (from :func:`list_images`) replaces the folder's listing. ``exact_skip`` as in
    :func:`~annofree.data.shards.image_text_batches`: with it, the files of skipped batches are still decoded,
    as a bad one moves the batch boundaries; without it, they are skipped unread, exact only if none was bad.
    The epoch may end with a tally ``Batch(data=None, ...)`` carrying the drops after the last batch.
    """
    if size < 1:
        raise UserError(f"image size must be >= 1, got {size}")
    spec.check()
    if files is None:
        files = _folder_files(spec.data)
    if files is None:
        sample_fn = functools.partial(_shard_sample, size)
        return image_text_batches(spec, sample_fn, collate_images, shuffle_buffer, exact_skip, require_caption=False)
    return _folder_batches(files, spec, size, exact_skip)


def _folder_files(data: str) -> list[str] | None:
    """The images of ``data`` if it is a folder holding any; None if it names shards."""
    root = Path(os.path.expanduser(data.strip()))
    if not root.is_dir():
        return None
    files = _scan(root)
    if files:
        return files
    if any(path.is_file() and path.name.endswith(SHARD_SUFFIXES) for path in root.iterdir()):
        return None
    raise UserError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) nor shards in it")


def _shard_sample(size: int, key: str, image: np.ndarray, caption: str, rng: random.Random) -> torch.Tensor:
    return to_chw_tensor(fit_image(image, size))


def _folder_batches(files: list[str], spec: LoaderSpec, size: int, exact_skip: bool) -> Iterator[Batch]:
    consumers = spec.world_size * max(1, spec.num_workers)
    if len(files) // consumers < spec.batch_size:
        raise UserError(
            f"{len(files)} images cannot give each of the {consumers} readers (ranks x workers) "
            f"one batch of {spec.batch_size}"
        )
    return stream_batches(_FolderStream(files, spec, size, exact_skip), spec)


class _FolderStream(IterableDataset):
    """One rank's epoch as an iterable of ``(DataLoader worker id, Batch | bool)``, run in each worker."""

    def __init__(self, files: list[str], spec: LoaderSpec, size: int, exact_skip: bool):
        super().__init__()
        self.files = files
        self.spec = spec
        self.size = size
        self.exact_skip = exact_skip

    def __iter__(self) -> Iterator[tuple[int, Batch | bool]]:
        return worker_stream(self.spec, self._batches)

    def _batches(self, consumer: int, consumers: int, own_skip: int) -> Iterator[Batch | None]:
        """This consumer's batches after its ``own_skip`` skipped ones, preceded by one None once those are
        behind it (no None if the files run out first)."""
        spec = self.spec
        files = consumer_files(self.files, spec.seed, spec.epoch, consumer, consumers)
        counter = _SkipCounter(f"rank {spec.rank} consumer {consumer}")
        if own_skip and not self.exact_skip:
            files, own_skip = files[own_skip * spec.batch_size :], 0
            if not files:
                return
        if own_skip == 0:
            yield None
        counter.quiet = own_skip > 0  # problems in skipped batches were logged before the resume
        pending: list[torch.Tensor] = []
        done = 0  # images decoded in this batch while skipping (not resized: they are not used)
        for path in files:
            image = _read(path, counter)
            if image is None:
                continue
            if own_skip == 0:
                pending.append(to_chw_tensor(fit_image(image, self.size)))
            else:
                done += 1
            if len(pending) + done < spec.batch_size:
                continue
            if own_skip > 0:  # a batch already consumed before the resume
                own_skip, done = own_skip - 1, 0
                counter.quiet = own_skip > 0
                counter.take()
                if own_skip == 0:
                    yield None
                continue
            skipped, reasons = counter.take()
            yield Batch(collate_images(pending), skipped, reasons)
            pending = []
        skipped, reasons = counter.take()
        if skipped and own_skip == 0:
            yield Batch(None, skipped, reasons)  # the tally of drops after the last batch


def _read(path: str, counter: _SkipCounter) -> np.ndarray | None:
    """The decoded image, or None after counting and (for the first few) logging why not."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        counter.add("corrupt_image", f"{path}: unreadable ({exc.__class__.__name__}: {exc})")
        return None
    try:
        return decode_image(data, path)
    except UserError as exc:
        counter.add("corrupt_image", str(exc))
        return None
