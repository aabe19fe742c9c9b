"""Image-caption shards read as the training batches of one epoch for one rank, with exact resume.

Reading (:func:`image_text_batches`) for rank ``r`` of ``R`` with ``W`` DataLoader workers (``W = 1`` when
``num_workers`` is 0) gives each of the ``C = R * W`` consumers (consumer ``r * W + w``) its own part of the
epoch:

1. Which samples a consumer reads is set by :mod:`annofree.data.sampling`. By default every shard is read
   once per epoch: the shard list is shuffled with ``(seed, epoch)``; consumer ``c`` reads the whole shards
   ``[c], [c + C], ...`` of the first ``n // C * C`` of the ``n`` full-size shards, and, of the other shards
   (the remaining ones, those much smaller than the median such as a partial last shard, or all when there
   are fewer shards than consumers), the samples whose index in those shards satisfies ``index % C == c``.
   Every consumer thus reads about the same number of samples, and no sample goes to two consumers.
   Resampled (``ShardSampling(resampled=True)``), each consumer draws shards with replacement from its own
   seeded generator, mixing sources by weight, and an epoch is ``samples_per_epoch`` samples.
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
shard and key. A shard that cannot be read (unreachable, corrupt, empty, not a tar, truncated: the samples
before the damage are used) is skipped and reported once per process by its name, with a count of the bad
shards so far; reading goes on. A shard whose samples are not grouped by key (a sample's members not
adjacent, as ``tar cf`` of a folder stores them) cannot be read as a stream: when the local shards checked
at the start (the first, and then the middle and the last) are all like that, the data was made the wrong
way and reading refuses to start (``UngroupedShardError``, saying how to make shards); otherwise such a
shard is reported like a damaged one. Tables (CSV, TSV, parquet) given as shards are refused with a pointer
to ``annofree data shards``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from annofree.data.images import decode_image
from annofree.data.layout import CAPTION_EXTENSION, IMAGE_EXTENSIONS
from annofree.data.sampling import (
    ShardSampling,
    derive_seed,
    epoch_samples,
    resampled_samples,
    sample_rng,
)
from annofree.data.sources import ShardSourceError, expand_sources, is_url, local_sizes, read_shard
from annofree.data.spec import LoaderSpec
from annofree.data.tar_reading import CorruptShardError, UngroupedShardError, check_grouped
from annofree.errors import UserError

logger = logging.getLogger(__name__)

SKIP_REASONS = ("missing_image", "missing_caption", "bad_caption", "corrupt_image", "dropped")
MAX_SAMPLE_WARNINGS = 5  # per consumer and epoch; later bad samples are only counted


@dataclass
class Batch:
    """One training micro-batch and the data problems met while making it.

    ``data`` is what ``collate_fn`` returned. ``skipped`` is the number of samples this batch's worker
    dropped since its previous batch (or since the start of the epoch), and ``reasons`` splits it by reason
    (non-zero entries only): ``missing_image``, ``missing_caption``, ``bad_caption`` (empty, whitespace or
    not UTF-8), ``corrupt_image`` (bytes that do not decode) and ``dropped`` (``sample_fn`` returned None).
    ``bad_shards`` maps each shard this worker gave up on since its previous batch to why.
    The epoch may end with a tally, a Batch whose ``data`` is None, carrying the drops after the last
    batch; summed over an epoch's items ``skipped`` then counts every drop of the samples read.
    """

    data: Any
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    bad_shards: dict[str, str] = field(default_factory=dict)


SampleFn = Callable[[str, np.ndarray, str, random.Random], Any]
CollateFn = Callable[[list[Any]], Any]


def image_text_batches(
    spec: LoaderSpec,
    sample_fn: SampleFn,
    collate_fn: CollateFn,
    shuffle_buffer: int = 1000,
    exact_skip: bool = True,
    require_caption: bool = True,
    sampling: ShardSampling | None = None,
) -> Iterator[Batch]:
    """The batches of one epoch for one rank, read from the image-caption shards named by ``spec.data``
    (local files, ``pipe:`` commands, HTTP(S) or fsspec URLs, ``::``-separated sources:
    :mod:`annofree.data.sources`), drawn as ``sampling`` says (:class:`~annofree.data.sampling.ShardSampling`;
    by default every shard once per epoch).

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

    Local shard files are checked now (``UserError`` naming what is missing); reading starts on iteration.
    See the module docstring for how the epoch is split between ranks and workers.
    """
    spec.check()
    sampling = sampling or ShardSampling()
    sources = expand_sources(spec.data)
    sampling.check(len(sources), spec.data)
    shards = list(dict.fromkeys(shard for source in sources for shard in source))
    _check_grouped_at_start(shards)
    options = _StreamOptions(sample_fn, collate_fn, shuffle_buffer, exact_skip, require_caption, sampling)
    stream = _ImageTextStream(sources, shards, local_sizes(shards), spec, options)
    return stream_batches(stream, spec)


_GROUPED_SHARDS: set[tuple[str, int, int]] = set()  # (path, size, mtime) of local shards found grouped


def _check_grouped_at_start(shards: list[str]) -> None:
    """Refuse data whose local shards checked (the first; if it is not grouped by key, also the middle and
    the last) are all not grouped by key: made by hand with ``tar``, all of them likely are, and reading
    would drop every sample. One such shard among good ones is reported when read, and skipped. Checked
    once per process and file version."""
    local = [shard for shard in shards if not is_url(shard)]
    if not local:
        return
    first_problem = None
    for path in dict.fromkeys([local[0], local[len(local) // 2], local[-1]]):
        try:
            _check_grouped_once(path)
            return
        except UngroupedShardError as exc:
            first_problem = first_problem or exc
    raise first_problem


def _check_grouped_once(path: str) -> None:
    stat = os.stat(path)
    signature = (path, stat.st_size, stat.st_mtime_ns)
    if signature not in _GROUPED_SHARDS:
        check_grouped(path)
        _GROUPED_SHARDS.add(signature)


def stream_batches(stream: IterableDataset, spec: LoaderSpec) -> Iterator[Batch]:
    """The batches of a stream of ``(worker id, Batch | bool)`` items (see ``worker_stream``), read in the
    calling process or by ``spec.num_workers`` DataLoader workers taking strict turns. Bad shards the batches
    carry are logged here, once per process each."""
    if spec.num_workers == 0:
        return _reported(batch for _, batch in stream if isinstance(batch, Batch))
    # The stream batches by itself; `_unchanged` keeps the DataLoader from converting arrays in the batches.
    # Its own generator: creating the workers must not draw from the global torch RNG, which the training
    # step uses (Gumbel noise, drop path); else a resumed run, which starts a loader mid-epoch, would diverge.
    generator = torch.Generator().manual_seed(derive_seed("loader", spec.seed, spec.epoch, spec.rank) % 2**63)
    loader = DataLoader(
        stream, batch_size=None, num_workers=spec.num_workers, collate_fn=_unchanged, generator=generator
    )
    return _reported(_round_robin(loader, spec.num_workers, resuming=spec.skip_batches > 0))


def _unchanged(item: Any) -> Any:
    return item


_REPORTED_SHARDS: set[str] = set()  # shards this process has reported bad


def _reported(batches: Iterable[Batch]) -> Iterator[Batch]:
    for batch in batches:
        for shard, message in batch.bad_shards.items():
            if shard not in _REPORTED_SHARDS:
                _REPORTED_SHARDS.add(shard)
                logger.warning("%s [%d bad shard(s) so far]", message, len(_REPORTED_SHARDS))
        yield batch


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


@dataclass(frozen=True)
class _StreamOptions:
    sample_fn: SampleFn
    collate_fn: CollateFn
    shuffle_buffer: int
    exact_skip: bool
    require_caption: bool
    sampling: ShardSampling


class _ImageTextStream(IterableDataset):
    """One rank's epoch as an iterable of ``(DataLoader worker id, Batch)``, run in each worker."""

    def __init__(
        self,
        sources: list[list[str]],
        shards: list[str],
        sizes: list[int] | None,
        spec: LoaderSpec,
        options: _StreamOptions,
    ):
        super().__init__()
        self.sources = sources
        self.shards = shards
        self.sizes = sizes
        self.spec = spec
        self.options = options

    def __iter__(self) -> Iterator[tuple[int, Batch | bool]]:
        return worker_stream(self.spec, self._batches)

    def _raw(self, consumer: int, consumers: int, counter: _SkipCounter) -> tuple[Iterator, int | None]:
        """This consumer's raw samples, and how many batches it makes in all (None: until they run out)."""
        spec, sampling = self.spec, self.options.sampling
        read = functools.partial(_read_reporting, counter=counter)
        if not sampling.resampled:
            samples = epoch_samples(self.shards, self.sizes, read, spec.seed, spec.epoch, consumer, consumers)
            return samples, None
        samples = resampled_samples(
            self.sources, sampling.source_weights, read, spec.seed, spec.epoch, consumer, consumers
        )
        workers = consumers // spec.world_size
        batches = sampling.batches_per_rank(spec.batch_size, spec.world_size)
        return samples, len(range(consumer % workers, batches, workers))

    def _batches(self, consumer: int, consumers: int, own_skip: int) -> Iterator[Batch | None]:
        """This consumer's batches after its ``own_skip`` skipped ones, preceded by one None once those
        are behind it (no None if the data ends first)."""
        spec, options = self.spec, self.options
        where = f"rank {spec.rank} consumer {consumer}"
        counter = _SkipCounter(where)
        raw, limit = self._raw(consumer, consumers, counter)
        buffer_rng = random.Random(derive_seed("buffer", spec.seed, spec.epoch, consumer, consumers))
        samples = _shuffled(_checked_samples(raw, counter, options.require_caption), options.shuffle_buffer, buffer_rng)
        if limit is not None and own_skip >= limit:  # nothing of this consumer's part is left
            yield None
            return
        if own_skip and not options.exact_skip:
            counter.quiet = True
            wanted = own_skip * spec.batch_size
            if sum(1 for _ in itertools.islice(samples, wanted)) < wanted:
                return
            counter.take()
            made, own_skip = own_skip, 0
        else:
            made = 0
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
            sample = options.sample_fn(key, image, caption, sample_rng(spec.seed, spec.epoch, key))
            if sample is None:
                counter.add("dropped", f"{shard}:{key}: dropped by sample_fn")
                continue
            pending.append(sample)
            if len(pending) < spec.batch_size:
                continue
            made += 1
            if own_skip > 0:  # a batch already consumed before the resume
                own_skip -= 1
                counter.quiet = own_skip > 0
                counter.take()
                if own_skip == 0:
                    yield None
            else:
                skipped, reasons = counter.take()
                yield Batch(options.collate_fn(pending), skipped, reasons, counter.take_bad_shards())
            pending = []
            if made == limit:  # a resampled epoch's share: the stream itself never ends
                return
        skipped, reasons = counter.take()
        bad_shards = counter.take_bad_shards()
        if (skipped or bad_shards) and own_skip == 0:
            yield Batch(None, skipped, reasons, bad_shards)  # the tally after the last batch: the consumer's end


_WANTED = (*IMAGE_EXTENSIONS, CAPTION_EXTENSION)


def _read_reporting(shard: str, counter: _SkipCounter) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """``(shard, key, files)`` of one shard; if it fails, it is reported to ``counter`` and the samples read
    before the failure are kept."""
    try:
        for key, files in read_shard(shard, _WANTED):
            yield shard, key, files
    except UngroupedShardError as exc:
        counter.shard_failed(shard, f"skipping the rest of a shard: {exc}")
    except (CorruptShardError, ShardSourceError) as exc:
        counter.shard_failed(shard, str(exc))


def _checked_samples(
    raw: Iterable[tuple[str, str, dict[str, bytes]]], counter: _SkipCounter, require_caption: bool = True
) -> Iterator[tuple[str, str, str, bytes, str]]:
    """``(shard, key, image extension, image bytes, caption)`` of the samples that have an image and a
    non-empty UTF-8 caption (without ``require_caption``: any caption or none, read as ``""``); the others
    are counted (these checks need no decoding)."""
    for shard, key, files in raw:
        try:
            extension = image_extension(files)
            if require_caption:
                caption = caption_text(files)
            else:
                caption = files.get(CAPTION_EXTENSION, b"").decode("utf-8", errors="replace").strip()
        except RejectedSample as rejected:
            counter.add(rejected.reason, f"{shard}:{key}: {rejected.detail}")
            continue
        yield shard, key, extension, files[extension], caption


class RejectedSample(Exception):
    """A sample training cannot use, found before decoding: ``reason`` is the counter's key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def image_extension(files: dict[str, bytes]) -> str:
    """The member extension of a sample's image; ``RejectedSample("missing_image")`` without one."""
    extension = next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)
    if extension is None:
        raise RejectedSample("missing_image", f"no image ({'/'.join(IMAGE_EXTENSIONS)})")
    return extension


def caption_text(files: dict[str, bytes]) -> str:
    """A sample's caption, stripped; ``RejectedSample`` when it is missing, not UTF-8 or empty."""
    if CAPTION_EXTENSION not in files:
        raise RejectedSample("missing_caption", f"no caption (.{CAPTION_EXTENSION})")
    try:
        caption = files[CAPTION_EXTENSION].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RejectedSample("bad_caption", "caption is not UTF-8") from None
    if not caption:
        raise RejectedSample("bad_caption", "empty caption")
    return caption


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
    """Counts dropped samples by reason since the last batch and collects the shards given up on; logs the
    first few bad samples with their names (bad shards are logged by the main process, once each)."""

    def __init__(self, where: str):
        self.where = where
        self.counts: dict[str, int] = {}
        self.bad_shards: dict[str, str] = {}
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

    def shard_failed(self, shard: str, message: str) -> None:
        if not self.quiet:
            self.bad_shards.setdefault(shard, message)

    def take(self) -> tuple[int, dict[str, int]]:
        counts, self.counts = self.counts, {}
        return sum(counts.values()), counts

    def take_bad_shards(self) -> dict[str, str]:
        bad, self.bad_shards = self.bad_shards, {}
        return bad
