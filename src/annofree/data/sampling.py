"""Which samples each consumer (a DataLoader worker of a rank) reads, and in which order: deterministic
from the seed, the epoch and the consumer, so that a resumed run rebuilds exactly the same stream.

Two ways (:class:`ShardSampling`):

- **Epochs** (the default): every shard is read once per epoch (:func:`split_shards`); several sources
  (``a::b``) are simply read together.
- **Resampled** (``resampled=True``): each consumer draws shards with replacement, forever, from each source
  (:func:`resampled_samples`); with several sources each sample comes from source ``i`` with probability
  ``source_weights[i] / sum(source_weights)`` (by default each source's share of the shards). Epochs then
  only cut the endless stream into ``samples_per_epoch`` pieces, for logging and for a cheap exact resume;
  each epoch draws anew.
"""

from __future__ import annotations

import hashlib
import logging
import random
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from annofree.errors import UserError

logger = logging.getLogger(__name__)

FULL_SHARD = 0.9  # a shard this size of the median or larger is handed out whole

Sample = tuple[str, str, dict[str, bytes]]  # (shard, key, files)
ShardReader = Callable[[str], Iterator[Sample]]  # a shard's samples; reports and swallows its failures


def derive_seed(*parts: object) -> int:
    """A 64-bit seed from any values, the same in every process (unlike ``hash()`` of strings)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def sample_rng(seed: int, epoch: int, key: str) -> random.Random:
    """The generator handed to ``sample_fn`` for one sample: it depends on nothing but (seed, epoch, key)."""
    return random.Random(derive_seed("sample", seed, epoch, key))


@dataclass(frozen=True)
class ShardSampling:
    """How shards are drawn: once per epoch (default) or resampled with replacement, and the sources' weights.

    ``samples_per_epoch`` (over all ranks) is required when resampling: an epoch then has
    ``samples_per_epoch // (batch_size * world_size)`` batches per rank. ``source_weights`` (one positive
    number per ``::``-separated source) need ``resampled``: an epoch that reads every shard once has no room
    for weights.
    """

    resampled: bool = False
    source_weights: tuple[float, ...] | None = None
    samples_per_epoch: int | None = None

    def check(self, sources: int, data: str) -> None:
        """Raise a one-line ``UserError`` if these settings do not fit ``sources`` sources (named by ``data``)."""
        if self.resampled and not self.samples_per_epoch:
            raise UserError("resampled shards need samples_per_epoch (the samples of an epoch, over all ranks)")
        if not self.resampled and self.samples_per_epoch is not None:
            raise UserError("samples_per_epoch applies to resampled shards only (an epoch reads every shard once)")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise UserError(f"samples_per_epoch must be >= 1, got {self.samples_per_epoch}")
        if self.source_weights is None:
            return
        if not self.resampled:
            raise UserError("source_weights need resampled shards (an epoch reads every shard once)")
        if len(self.source_weights) != sources:
            raise UserError(
                f"source_weights has {len(self.source_weights)} weights for {sources} source(s) in {data!r} "
                f"(sources are separated by '::')"
            )
        if not all(weight > 0 for weight in self.source_weights):
            raise UserError(f"source_weights must all be > 0, got {list(self.source_weights)}")

    def batches_per_rank(self, batch_size: int, world_size: int) -> int:
        """The batches of one resampled epoch on each rank (``UserError`` if fewer than one)."""
        batches = self.samples_per_epoch // (batch_size * world_size)
        if batches < 1:
            raise UserError(
                f"samples_per_epoch {self.samples_per_epoch} is less than one batch on each rank "
                f"(batch_size {batch_size} x {world_size} rank(s))"
            )
        return batches


def split_shards(
    shards: list[str], seed: int, epoch: int, consumer: int, consumers: int, sizes: list[int] | None = None
) -> tuple[list[str], list[str]]:
    """``(own, shared)``: the shards that ``consumer`` reads whole, and those that all consumers read, each
    keeping the samples whose index (counted over the shared shards in order) is ``consumer`` modulo
    ``consumers``. The shard order is shuffled per (seed, epoch), identically for every consumer.

    Only full-size shards are handed out whole (``sizes``, in bytes, tells which: at least
    ``FULL_SHARD`` of the median; all when None, as for remote shards, or when there is one consumer), as many
    as divide evenly among the consumers; the rest, such as a partial last shard, are shared, so that the
    consumers' parts stay about equal."""
    order = list(range(len(shards)))
    random.Random(derive_seed("shard-order", seed, epoch)).shuffle(order)
    if sizes is None or consumers == 1:  # one consumer reads everything: nothing to balance
        full = order
    else:
        median = statistics.median(sizes)
        full = [index for index in order if sizes[index] >= FULL_SHARD * median]
    whole = full[: len(full) // consumers * consumers]
    handed_out = set(whole)
    return [shards[i] for i in whole[consumer::consumers]], [shards[i] for i in order if i not in handed_out]


def epoch_samples(
    shards: list[str], sizes: list[int] | None, read: ShardReader, seed: int, epoch: int, consumer: int, consumers: int
) -> Iterator[Sample]:
    """This consumer's samples of one epoch: all samples of its own shards, then its share of the shared
    ones (see :func:`split_shards`)."""
    own, shared = split_shards(shards, seed, epoch, consumer, consumers, sizes)
    for shard in own:
        yield from read(shard)
    index = 0
    for shard in shared:
        for sample in read(shard):
            index += 1
            if (index - 1) % consumers == consumer:
                yield sample


def resampled_samples(
    sources: list[list[str]],
    weights: tuple[float, ...] | None,
    read: ShardReader,
    seed: int,
    epoch: int,
    consumer: int,
    consumers: int,
) -> Iterator[Sample]:
    """This consumer's endless stream: each sample comes from a source drawn with ``weights`` (by default
    in proportion to the sources' shard counts), each source reads whole shards drawn with replacement.

    A source whose every shard gave no sample since its last good one is left out of the mixture (with a
    warning), so that data that cannot be read never spins forever; the stream ends when no source is left."""
    weights = weights or tuple(float(len(shards)) for shards in sources)
    mix = random.Random(derive_seed("mix", seed, epoch, consumer, consumers))
    streams = {}
    for index, shards in enumerate(sources):
        rng = random.Random(derive_seed("resample", seed, epoch, consumer, consumers, index))
        streams[index] = _resampled_source(shards, read, rng)
    while streams:
        live = list(streams)
        index = mix.choices(live, weights=[weights[i] for i in live])[0]
        sample = next(streams[index], None)
        if sample is None:
            logger.warning(
                "source %d of %d (%s, %d shards) gave no sample from any of its shards: left out of the mixture",
                index + 1, len(sources), sources[index][0], len(set(sources[index])),
            )  # fmt: skip
            del streams[index]
            continue
        yield sample


def _resampled_source(shards: list[str], read: ShardReader, rng: random.Random) -> Iterator[Sample]:
    distinct = len(set(shards))
    barren: set[str] = set()  # shards that gave no sample since the last sample of this source
    while len(barren) < distinct:
        shard = shards[rng.randrange(len(shards))]
        gave = False
        for sample in read(shard):
            gave = True
            yield sample
        if gave:
            barren.clear()
        else:
            barren.add(shard)
