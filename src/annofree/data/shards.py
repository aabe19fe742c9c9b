"""Image-caption pairs in webdataset tar shards (the img2dataset layout): writing them, and reading them
as the training batches of one epoch for one rank.

A shard is a plain tar file whose members ``KEY.jpg`` + ``KEY.txt`` (+ ``KEY.json``) form one sample;
shards are named ``000000.tar``, ``000001.tar``, ... and addressed with brace patterns
(``data/{000000..000099}.tar``).

Reading (:func:`image_text_batches`) for rank ``r`` of ``R`` with ``W`` DataLoader workers (``W = 1`` when
``num_workers`` is 0) gives each of the ``C = R * W`` consumers (consumer ``r * W + w``) its own part of the
epoch:

1. The shard list is shuffled with ``(seed, epoch)``; consumer ``c`` reads the whole shards
   ``[c], [c + C], ...`` of the first ``n // C * C`` of the ``n`` full-size shards, and, of the other
   shards (the remaining ones, those much smaller than the median such as a partial last shard, or all
   when there are fewer shards than consumers), the samples whose index in those shards satisfies
   ``index % C == c``. Every consumer thus reads about the same number of samples, and no sample goes to
   two consumers.
2. Samples without an image or with an empty caption are skipped before decoding; the rest go through a
   seeded shuffle buffer of raw (encoded) samples, are decoded, passed to ``sample_fn`` with a
   ``random.Random`` seeded from ``(seed, epoch, key)`` and grouped into batches of exactly ``batch_size``
   (an incomplete last batch is dropped).
3. With workers, torch's DataLoader takes batch ``i`` from worker ``i % W``. A rank's epoch ends as soon as
   the worker whose turn it is has no batch left, so the order of batches is always that strict
   round-robin, which is what makes ``skip_batches`` exact: each worker skips its own share of the first
   ``skip_batches`` batches, and the workers are renumbered so that the batch after the skipped ones comes
   first. The other workers' remaining batches are left out of the epoch; as the parts are balanced, that
   is about one batch per worker when the full-size shards hold similar numbers of samples. Ranks can
   also end up with different numbers of batches, so a distributed loop must stop all ranks when the
   first one runs out.

Each :class:`Batch` carries ``skipped``: how many samples its worker dropped since its previous batch, by
reason, so the training loop can log bad data; the first few are also logged as warnings that name the
shard and key. A corrupt or truncated shard is reported with a warning and the samples before the damage
are used. A shard whose samples are not grouped by key (a sample's members not adjacent, as ``tar cf`` of a
folder stores them) cannot be read as a stream: if it is the first shard, reading refuses to start
(``UngroupedShardError``, saying how to make shards); a later one is reported like a damaged shard.
Tables (CSV, TSV, parquet) given as shards are refused with a pointer to ``annofree data shards``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import random
import statistics
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from braceexpand import braceexpand
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from annofree.data.images import decode_image
from annofree.errors import UserError

if TYPE_CHECKING:  # only the type: the data room must not import the methods room at run time
    from annofree.methods.base import LoaderSpec

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the first one present in a sample is its image
CAPTION_EXTENSION = "txt"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # what a directory given as data contributes
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")  # caption tables: `annofree data shards` makes shards of them
MAKE_SHARDS = "make shards with `annofree data shards SRC OUT` (SRC: a folder of images with .txt captions, or a table)"
SKIP_REASONS = ("missing_image", "missing_caption", "bad_caption", "corrupt_image", "dropped")
FULL_SHARD = 0.9  # a shard this size of the median or larger is handed out whole
MAX_SAMPLE_WARNINGS = 5  # per consumer and epoch; later bad samples are only counted

_BLOCK = 512  # tar block size
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


# --------------------------------------------------------------------------------------------- writing


class ShardWriter:
    """Write image-caption samples into numbered tar shards, ``samples_per_shard`` per shard.

    Use it as a context manager; each shard appears under its final name only once it is complete
    (written as a hidden temporary file, then renamed), and if the block raises, the incomplete shard
    is discarded. ``shard_paths`` lists the shards written and ``pattern`` is a brace pattern covering them,
    ready for ``LoaderSpec.data``::

        with ShardWriter("shards", samples_per_shard=1000) as writer:
            writer.write("000000000", image, "a dog on a sofa")
        spec = LoaderSpec(data=writer.pattern, batch_size=64)

    ``image`` is a ``uint8`` array (``[H, W, 3]`` or ``[H, W]``), encoded as JPEG (``jpeg_quality``) or PNG
    (``image_format="png"``), or bytes already encoded, stored as given under the extension their signature
    shows (png, webp, else jpg). Keys must not contain dots (a tar member's key ends at its first dot).
    Numbering starts at ``first_shard``, so that several writers can make the shards of one data set.
    """

    def __init__(
        self,
        out_dir: str | Path,
        samples_per_shard: int = 1000,
        prefix: str = "",
        jpeg_quality: int = 95,
        image_format: str = "jpg",
        first_shard: int = 0,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        if first_shard < 0:
            raise ValueError(f"first_shard must be >= 0, got {first_shard}")
        if image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
        if "/" in prefix or os.sep in prefix:
            raise ValueError(f"prefix must be a file-name prefix, not a path: {prefix!r}")
        self.out_dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.prefix = prefix
        self.jpeg_quality = jpeg_quality
        self.image_format = image_format
        self.first_shard = first_shard
        self.shard_paths: list[Path] = []
        self.num_samples = 0
        self._tar: tarfile.TarFile | None = None
        self._tmp_path: Path | None = None
        self._keys_in_shard: set[str] = set()
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard_current()
            self._closed = True

    @property
    def pattern(self) -> str:
        """A brace pattern naming exactly the shards written (a plain path when there is one)."""
        if not self.shard_paths:
            raise ValueError(f"no shards written to {self.out_dir}")
        if len(self.shard_paths) == 1:
            return str(self.shard_paths[0])
        first, last = self._index(self.first_shard), self._index(self.first_shard + len(self.shard_paths) - 1)
        return str(self.out_dir / f"{self.prefix}{{{first}..{last}}}.tar")

    def write(self, key: str, image: np.ndarray | bytes, caption: str, extra: dict | None = None) -> None:
        """Add one sample: ``KEY.<jpg|png|webp>``, ``KEY.txt`` and, with ``extra``, ``KEY.json``."""
        if self._closed:
            raise ValueError("ShardWriter is closed")
        if not key or "." in key or key.startswith("/") or key.endswith("/"):
            raise ValueError(f"invalid sample key {key!r} (non-empty, no dots, no leading/trailing slash)")
        if self._tar is None:
            self._open_next()
        if key in self._keys_in_shard:
            raise ValueError(f"duplicate sample key {key!r} in shard {self._final_path(len(self.shard_paths))}")
        image_bytes, extension = self._encode(image)
        self._add(f"{key}.{extension}", image_bytes)
        self._add(f"{key}.{CAPTION_EXTENSION}", caption.encode("utf-8"))
        if extra is not None:
            self._add(f"{key}.json", json.dumps(extra, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        self._keys_in_shard.add(key)
        self.num_samples += 1
        if len(self._keys_in_shard) >= self.samples_per_shard:
            self._finish_current()

    def close(self, keep_empty: bool = False) -> None:
        """Finish the last shard. Called by the context manager. With ``keep_empty``, a writer that was given
        no sample still writes one empty shard (shards numbered by several writers then leave no gap)."""
        if not self._closed:
            if keep_empty and self._tar is None and not self.shard_paths:
                self._open_next()
            self._finish_current()
            self._closed = True

    def _index(self, number: int) -> str:
        return f"{number:06d}"

    def _final_path(self, written: int) -> Path:
        """The path of the shard after ``written`` finished ones."""
        return self.out_dir / f"{self.prefix}{self._index(self.first_shard + written)}.tar"

    def _open_next(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        final = self._final_path(len(self.shard_paths))
        self._tmp_path = final.with_name(f".{final.name}.tmp")
        self._tar = tarfile.open(self._tmp_path, "w")  # noqa: SIM115 (open across write calls)
        self._keys_in_shard = set()

    def _finish_current(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final = self._final_path(len(self.shard_paths))
        os.replace(self._tmp_path, final)
        self.shard_paths.append(final)
        self._tar, self._tmp_path = None, None

    def _discard_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tmp_path.unlink(missing_ok=True)
            self._tar, self._tmp_path = None, None

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0  # shards with the same content are byte-identical
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _encode(self, image: np.ndarray | bytes) -> tuple[bytes, str]:
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            return data, _extension_from_signature(data)
        array = np.asarray(image)
        if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3))):
            raise ValueError(f"image must be uint8 [H, W, 3] or [H, W], got {array.dtype} {list(array.shape)}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        buffer = io.BytesIO()
        pil = Image.fromarray(np.ascontiguousarray(array))
        if self.image_format == "png":
            pil.save(buffer, format="PNG")
        else:
            pil.save(buffer, format="JPEG", quality=self.jpeg_quality)
        return buffer.getvalue(), self.image_format


def _extension_from_signature(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


# ------------------------------------------------------------------------------------- finding shards


def expand_shards(data: str) -> list[str]:
    """The shard files that ``data`` names, in order, each once.

    ``data`` is a brace pattern (``shards/{000000..000009}.tar``), a single tar file, a directory (its
    ``.tar``/``.tar.gz``/``.tgz`` files, sorted) or a comma-separated list of those. Anything missing is a
    ``UserError`` naming the part of ``data`` at fault.
    """
    parts = [part.strip() for part in _split_outside_braces(data) if part.strip()]
    if not parts:
        raise UserError(f"no shards given (data={data!r})")
    paths: list[str] = []
    for part in parts:
        expanded = os.path.expanduser(part)
        if "{" in expanded:
            candidates = list(braceexpand(expanded))
            missing = [path for path in candidates if not os.path.isfile(path)]
            if missing:
                raise UserError(
                    f"{part}: {len(missing)} of {len(candidates)} shard files do not exist (first: {missing[0]})"
                )
            paths.extend(candidates)
        elif os.path.isdir(expanded):
            found = sorted(
                str(path) for path in Path(expanded).iterdir() if path.is_file() and path.name.endswith(SHARD_SUFFIXES)
            )
            if not found:
                raise UserError(f"{part}: directory holds no shard files ({', '.join(SHARD_SUFFIXES)}); {MAKE_SHARDS}")
            paths.extend(found)
        elif os.path.isfile(expanded):
            paths.append(expanded)
        else:
            raise UserError(f"{part}: no such shard file or directory")
    for path in paths:
        if path.lower().endswith(TABLE_SUFFIXES):
            raise UserError(
                f"{path}: a table, not webdataset shards (tar files of KEY.jpg + KEY.txt); make shards from it with "
                f"`annofree data shards {path} OUT`, then give OUT as the data"
            )
    return list(dict.fromkeys(paths))


def _split_outside_braces(text: str) -> list[str]:
    """Split at commas that are not inside ``{...}`` (those belong to a brace pattern)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


# ------------------------------------------------------------------------------------ reading a shard


class CorruptShardError(UserError):
    """A shard could not be read to its end (truncated or damaged); the samples before the damage were read."""


class UngroupedShardError(CorruptShardError):
    """A shard whose samples are not grouped by key: a key's members come back after another key's, as in
    ``tar cf x.tar -C folder .``, which stores files in directory order. A tar is read as a stream (it may be
    compressed, or, later, come through a pipe or over HTTP), so such a shard cannot be read correctly; the
    samples before the first member out of place were read."""

    def __init__(self, path: str, key: str):
        name = os.path.basename(path)
        super().__init__(
            f"{path}: samples are not grouped by key (a member of {key!r} comes after other samples' members; "
            f"a shard keeps each sample's files adjacent, as webdataset and img2dataset write them); {MAKE_SHARDS}, "
            f"or pack a folder with GNU tar: `tar --sort=name -cf {name} -C FOLDER .`"
        )


class _KeyGrouping:
    """Follows the sample keys of a tar's members in order: a key that comes back once another key has
    started means the shard is not grouped by key (``UngroupedShardError``)."""

    def __init__(self, path: str):
        self.path = path
        self.current: str | None = None
        self.finished: set[str] = set()

    def starts_sample(self, key: str) -> bool:
        """Whether ``key`` starts a new sample (False: it continues the current one)."""
        if key == self.current:
            return False
        if key in self.finished:
            raise UngroupedShardError(self.path, key)
        if self.current is not None:
            self.finished.add(self.current)
        self.current = key
        return True


def check_grouped(path: str, max_members: int = 100_000) -> None:
    """Raise ``UngroupedShardError`` if the samples among the first ``max_members`` members of the shard
    ``path`` are not grouped by key. Reads tar headers only (seeking over the data of an uncompressed tar);
    a shard that cannot be read is left to the reader, which reports damage as it meets it."""
    grouping = _KeyGrouping(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in itertools.islice(tar, max_members):
                split = _split_member_name(member.name) if member.isfile() else None
                if split is not None:
                    grouping.starts_sample(split[0])
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return


def iter_tar_samples(path: str, extensions: Iterable[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the samples of one shard as ``(key, {extension: bytes})``, in tar order.

    Members whose names share the part before the first dot of the file name form one sample (the
    webdataset rule); extensions are lower-cased, and only those in ``extensions`` (all when None) are
    read, the rest are passed over. Hidden files and directories are ignored. If the shard is truncated or
    damaged, the samples before the damage are yielded, then ``CorruptShardError`` is raised; if a sample's
    members are not adjacent, the samples before are yielded, then ``UngroupedShardError`` is raised.
    """
    wanted = None if extensions is None else set(extensions)
    grouping = _KeyGrouping(path)
    key: str | None = None
    files: dict[str, bytes] = {}
    problem: str | None = None
    try:
        with open(path, "rb") as file:
            compressed = file.read(6).startswith(_COMPRESSED_MAGIC)
            file.seek(0)
            with tarfile.open(fileobj=file, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    split = _split_member_name(member.name)
                    if split is None:
                        continue
                    member_key, extension = split
                    if grouping.starts_sample(member_key):
                        if key is not None:
                            yield key, files
                        key, files = member_key, {}
                    if wanted is None or extension in wanted:
                        files[extension] = tar.extractfile(member).read()
                end_offset = tar.offset
            if not compressed:
                # tarfile stops quietly at a missing or damaged header after the first one; a complete
                # archive has an end-of-archive block of zeros there.
                file.seek(end_offset)
                if file.read(_BLOCK) != bytes(_BLOCK):
                    problem = f"ends without an end-of-archive block at byte {end_offset} (truncated?)"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        problem = f"{exc.__class__.__name__}: {exc}"
    if key is not None:
        yield key, files
    if problem is not None:
        raise CorruptShardError(f"{path}: damaged shard, the rest of it is skipped ({problem})")


def _split_member_name(name: str) -> tuple[str, str] | None:
    folder, _, base = name.rpartition("/")
    if not base or base.startswith(".") or "." not in base:
        return None
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


# ------------------------------------------------------------------------------------------ the epoch


@dataclass
class Batch:
    """One training micro-batch and the data problems met while making it.

    ``data`` is what ``collate_fn`` returned. ``skipped`` is the number of samples this batch's worker
    dropped since its previous batch (or since the start of the epoch), and ``reasons`` splits it by reason
    (non-zero entries only): ``missing_image``, ``missing_caption``, ``bad_caption`` (empty, whitespace or
    not UTF-8), ``corrupt_image`` (bytes that do not decode) and ``dropped`` (``sample_fn`` returned None).
    The epoch may end with a tally, a Batch whose ``data`` is None, carrying the drops after the last
    batch; summed over an epoch's items ``skipped`` then counts every drop of the samples read.
    """

    data: Any
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


SampleFn = Callable[[str, np.ndarray, str, random.Random], Any]
CollateFn = Callable[[list[Any]], Any]


def derive_seed(*parts: object) -> int:
    """A 64-bit seed from any values, the same in every process (unlike ``hash()`` of strings)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def sample_rng(seed: int, epoch: int, key: str) -> random.Random:
    """The generator handed to ``sample_fn`` for one sample: it depends on nothing but (seed, epoch, key)."""
    return random.Random(derive_seed("sample", seed, epoch, key))


def split_shards(
    shards: list[str], seed: int, epoch: int, consumer: int, consumers: int, sizes: list[int] | None = None
) -> tuple[list[str], list[str]]:
    """``(own, shared)``: the shards that ``consumer`` reads whole, and those that all consumers read, each
    keeping the samples whose index (counted over the shared shards in order) is ``consumer`` modulo
    ``consumers``. The shard order is shuffled per (seed, epoch), identically for every consumer.

    Only full-size shards are handed out whole (``sizes``, in bytes, tells which: at least
    ``FULL_SHARD`` of the median), as many as divide evenly among the consumers; the rest, such as a
    partial last shard, are shared, so that the consumers' parts stay about equal."""
    order = list(range(len(shards)))
    random.Random(derive_seed("shard-order", seed, epoch)).shuffle(order)
    if sizes is None:
        full = order
    else:
        median = statistics.median(sizes)
        full = [index for index in order if sizes[index] >= FULL_SHARD * median]
    whole = full[: len(full) // consumers * consumers]
    handed_out = set(whole)
    return [shards[i] for i in whole[consumer::consumers]], [shards[i] for i in order if i not in handed_out]


def image_text_batches(
    spec: LoaderSpec,
    sample_fn: SampleFn,
    collate_fn: CollateFn,
    shuffle_buffer: int = 1000,
    exact_skip: bool = True,
    require_caption: bool = True,
) -> Iterator[Batch]:
    """The batches of one epoch for one rank, read from the image-caption shards named by ``spec.data``.

    ``sample_fn(key, image, caption, rng)`` turns a decoded sample (``uint8 [H, W, 3]`` image, stripped
    caption) into a training sample, or returns None to drop it; it must draw its randomness from ``rng``
    only, so that results do not depend on which worker runs it. ``collate_fn(samples)`` makes the batch.
    Both run in the DataLoader workers (``spec.num_workers``; 0 runs everything in this process); where
    workers are spawned rather than forked (macOS, Windows) they must be picklable (module-level functions).

    The first ``spec.skip_batches`` batches of the epoch are left out. With ``exact_skip`` (the default)
    the skipped samples are still decoded and passed through ``sample_fn`` (but not collated), because a
    sample that fails to decode or that ``sample_fn`` drops moves the batch boundaries; the result is then
    exactly the batches after the skipped ones. With ``exact_skip=False`` the skip counts samples before
    decoding, which is much cheaper but exact only if no skipped sample was dropped after the caption
    check.

    With ``require_caption=False`` (shards of images only) samples need no caption: ``caption`` is the
    sample's caption text when it has one (stripped, bytes that are not UTF-8 replaced), else ``""``; only
    ``missing_image``, decoding problems and ``sample_fn`` drop samples then.

    Shard files are checked now (``UserError`` naming what is missing); reading starts on iteration.
    See the module docstring for how the epoch is split between ranks and workers.
    """
    if spec.batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {spec.batch_size}")
    if spec.num_workers < 0:
        raise UserError(f"num_workers must be >= 0, got {spec.num_workers}")
    if not 0 <= spec.rank < spec.world_size:
        raise ValueError(f"rank {spec.rank} is not in [0, world_size={spec.world_size})")
    if spec.skip_batches < 0:
        raise ValueError(f"skip_batches must be >= 0, got {spec.skip_batches}")
    shards = expand_shards(spec.data)
    _check_first_shard(shards[0])
    sizes = [os.path.getsize(path) for path in shards]
    stream = _ImageTextStream(shards, sizes, spec, sample_fn, collate_fn, shuffle_buffer, exact_skip, require_caption)
    return stream_batches(stream, spec)


_GROUPED_SHARDS: set[tuple[str, int, int]] = set()  # (path, size, mtime) of first shards found grouped


def _check_first_shard(path: str) -> None:
    """Refuse data whose first shard is not grouped by key (made by hand with ``tar``: likely all of it is)
    before any work starts, rather than dropping every sample; checked once per process and file version."""
    stat = os.stat(path)
    signature = (path, stat.st_size, stat.st_mtime_ns)
    if signature not in _GROUPED_SHARDS:
        check_grouped(path)
        _GROUPED_SHARDS.add(signature)


def stream_batches(stream: IterableDataset, spec: LoaderSpec) -> Iterator[Batch]:
    """The batches of a stream of ``(worker id, Batch | bool)`` items (see ``worker_stream``), read in the
    calling process or by ``spec.num_workers`` DataLoader workers taking strict turns."""
    if spec.num_workers == 0:
        return (batch for _, batch in stream if isinstance(batch, Batch))
    # The stream batches by itself; `_unchanged` keeps the DataLoader from converting arrays in the batches.
    # Its own generator: creating the workers must not draw from the global torch RNG, which the training
    # step uses (Gumbel noise, drop path); else a resumed run, which starts a loader mid-epoch, would diverge.
    generator = torch.Generator().manual_seed(derive_seed("loader", spec.seed, spec.epoch, spec.rank) % 2**63)
    loader = DataLoader(
        stream, batch_size=None, num_workers=spec.num_workers, collate_fn=_unchanged, generator=generator
    )
    return _round_robin(loader, spec.num_workers, resuming=spec.skip_batches > 0)


def _unchanged(item: Any) -> Any:
    return item


def _round_robin(loader: DataLoader, workers: int, resuming: bool) -> Iterator[Batch]:
    """Pass the DataLoader's batches on while they come strictly in turn; stop at the first worker that
    has run out (the DataLoader would go on with the others, in an order that a resume cannot rebuild).

    When resuming, each worker first reports whether it got past its skipped batches; if one did not, the
    epoch had ended before the resume point, and nothing is left of it."""
    items = iter(loader)
    if resuming:
        reports = [next(items, None) for _ in range(workers)]
        if not all(report is not None and report[1] is True for report in reports):
            return
    for position, (worker, batch) in enumerate(items):
        if worker != position % workers:
            return
        yield batch
        if batch.data is None:  # a worker's closing tally: it has run out
            return


def worker_stream(
    spec: LoaderSpec, batches: Callable[[int, int, int], Iterator[Batch | None]]
) -> Iterator[tuple[int, Batch | bool]]:
    """One rank's epoch as ``(DataLoader worker id, Batch | bool)`` items, run inside each worker.

    ``batches(consumer, consumers, own_skip)`` yields a consumer's batches after its ``own_skip`` skipped
    ones, preceded by one None once those are behind it. The workers are renumbered so that DataLoader
    worker 0 (served first) holds batch ``spec.skip_batches``, the first one wanted; each then skips its
    own batches among the first ``skip`` (batch i is worker i % W's). Resuming, each worker's first item
    says whether it got past its skipped batches (True) or ran out before (False); see ``_round_robin``.
    """
    info = get_worker_info()
    worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
    skip = spec.skip_batches
    role = (worker + skip) % workers
    own_skip = max(0, -(-(skip - role) // workers))
    consumer = spec.rank * workers + role
    reported = False
    for batch in batches(consumer, spec.world_size * workers, own_skip):
        if batch is not None:
            yield worker, batch
        elif skip > 0:
            reported = True
            yield worker, True
    if skip > 0 and not reported:
        yield worker, False


class _ImageTextStream(IterableDataset):
    """One rank's epoch as an iterable of ``(DataLoader worker id, Batch)``, run in each worker."""

    def __init__(
        self,
        shards: list[str],
        sizes: list[int],
        spec: LoaderSpec,
        sample_fn: SampleFn,
        collate_fn: CollateFn,
        shuffle_buffer: int,
        exact_skip: bool,
        require_caption: bool = True,
    ):
        super().__init__()
        self.shards = shards
        self.sizes = sizes
        self.spec = spec
        self.sample_fn = sample_fn
        self.collate_fn = collate_fn
        self.shuffle_buffer = shuffle_buffer
        self.exact_skip = exact_skip
        self.require_caption = require_caption

    def __iter__(self) -> Iterator[tuple[int, Batch | bool]]:
        return worker_stream(self.spec, self._batches)

    def _batches(self, consumer: int, consumers: int, own_skip: int) -> Iterator[Batch | None]:
        """This consumer's batches after its ``own_skip`` skipped ones, preceded by one None once those
        are behind it (no None if the data ends first)."""
        spec = self.spec
        where = f"rank {spec.rank} consumer {consumer}"
        counter = _SkipCounter(where)
        own, shared = split_shards(self.shards, spec.seed, spec.epoch, consumer, consumers, self.sizes)
        raw = _checked_samples(_raw_samples(own, shared, consumer, consumers), counter, self.require_caption)
        samples = _shuffled(
            raw, self.shuffle_buffer, random.Random(derive_seed("buffer", spec.seed, spec.epoch, consumer, consumers))
        )
        if own_skip and not self.exact_skip:
            counter.quiet = True
            wanted = own_skip * spec.batch_size
            if sum(1 for _ in itertools.islice(samples, wanted)) < wanted:
                return
            counter.take()
            own_skip = 0
        if own_skip == 0:
            yield None
        counter.quiet = own_skip > 0
        pending: list[Any] = []
        for shard, key, extension, image_bytes, caption in samples:
            try:
                image = decode_image(image_bytes, f"{shard}:{key}.{extension}")
            except UserError as exc:
                counter.add("corrupt_image", str(exc))
                continue
            sample = self.sample_fn(key, image, caption, sample_rng(spec.seed, spec.epoch, key))
            if sample is None:
                counter.add("dropped", f"{shard}:{key}: dropped by sample_fn")
                continue
            pending.append(sample)
            if len(pending) < spec.batch_size:
                continue
            if own_skip > 0:  # a batch already consumed before the resume
                own_skip -= 1
                counter.quiet = own_skip > 0
                counter.take()
                if own_skip == 0:
                    yield None
            else:
                skipped, reasons = counter.take()
                yield Batch(self.collate_fn(pending), skipped, reasons)
            pending = []
        skipped, reasons = counter.take()
        if skipped and own_skip == 0:
            yield Batch(None, skipped, reasons)  # the tally of drops after the last batch: the consumer's end


def _raw_samples(
    own: list[str], shared: list[str], consumer: int, consumers: int
) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """``(shard, key, files)`` of this consumer: all samples of its own shards, then its share of the
    shared ones. A damaged shard is reported and the samples read before the damage are kept."""
    wanted = (*IMAGE_EXTENSIONS, CAPTION_EXTENSION)
    index = 0
    for shard, is_shared in itertools.chain(((s, False) for s in own), ((s, True) for s in shared)):
        try:
            for key, files in iter_tar_samples(shard, wanted):
                if is_shared:
                    index += 1
                    if (index - 1) % consumers != consumer:
                        continue
                yield shard, key, files
        except UngroupedShardError as exc:
            logger.warning("skipping the rest of a shard: %s", exc)
        except CorruptShardError as exc:
            logger.warning("%s", exc)


def _checked_samples(
    raw: Iterable[tuple[str, str, dict[str, bytes]]], counter: _SkipCounter, require_caption: bool = True
) -> Iterator[tuple[str, str, str, bytes, str]]:
    """``(shard, key, image extension, image bytes, caption)`` of the samples that have an image and a
    non-empty UTF-8 caption (without ``require_caption``: any caption or none, read as ``""``); the others
    are counted (these checks need no decoding)."""
    for shard, key, files in raw:
        extension = next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)
        if extension is None:
            counter.add("missing_image", f"{shard}:{key}: no image ({'/'.join(IMAGE_EXTENSIONS)})")
            continue
        if not require_caption:
            caption = files.get(CAPTION_EXTENSION, b"").decode("utf-8", errors="replace").strip()
            yield shard, key, extension, files[extension], caption
            continue
        if CAPTION_EXTENSION not in files:
            counter.add("missing_caption", f"{shard}:{key}: no caption (.{CAPTION_EXTENSION})")
            continue
        try:
            caption = files[CAPTION_EXTENSION].decode("utf-8").strip()
        except UnicodeDecodeError:
            counter.add("bad_caption", f"{shard}:{key}: caption is not UTF-8")
            continue
        if not caption:
            counter.add("bad_caption", f"{shard}:{key}: empty caption")
            continue
        yield shard, key, extension, files[extension], caption


def _shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A shuffle buffer: hold ``size`` items, emit a random one as each new item arrives."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


class _SkipCounter:
    """Counts dropped samples by reason since the last batch; logs the first few with their names."""

    def __init__(self, where: str):
        self.where = where
        self.counts: dict[str, int] = {}
        self.warned = 0
        self.quiet = False  # while re-reading batches skipped on resume: their problems were logged before

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.quiet or reason == "dropped":
            return
        if self.warned < MAX_SAMPLE_WARNINGS:
            self.warned += 1
            logger.warning("skipping sample %s", message)
            if self.warned == MAX_SAMPLE_WARNINGS:
                logger.warning("%s: further bad samples this epoch are counted in Batch.skipped only", self.where)

    def take(self) -> tuple[int, dict[str, int]]:
        counts, self.counts = self.counts, {}
        return sum(counts.values()), counts
