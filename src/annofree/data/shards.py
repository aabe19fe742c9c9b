"""Image-caption pairs in webdataset tar shards (the img2dataset layout): one import for the public names.

The code lives in modules along its seams:

- :mod:`annofree.data.layout`: member names and suffixes (``KEY.jpg`` + ``KEY.txt`` form a sample);
- :mod:`annofree.data.writer`: :class:`ShardWriter`, numbered shards written atomically;
- :mod:`annofree.data.tar_reading`: one shard's samples read as a stream, damage and key grouping;
- :mod:`annofree.data.sources`: naming shards (patterns, folders, ``pipe:``, HTTP(S), fsspec URLs, ``::``
  mixtures) and opening them, with retries;
- :mod:`annofree.data.sampling`: which shards each consumer reads (epochs, resampling, weighted mixtures);
- :mod:`annofree.data.stream`: the batches of one epoch for one rank, split between ranks and workers,
  with exact resume (:func:`image_text_batches`).
"""

from annofree.data.layout import (
    CAPTION_EXTENSION,
    IMAGE_EXTENSIONS,
    MAKE_SHARDS,
    SHARD_SUFFIXES,
    TABLE_SUFFIXES,
)
from annofree.data.sampling import FULL_SHARD, ShardSampling, derive_seed, sample_rng, split_shards
from annofree.data.sources import (
    RETRY,
    RetryPolicy,
    ShardSourceError,
    TransientSourceError,
    expand_shards,
    expand_sources,
    open_shard,
    read_shard,
)
from annofree.data.stream import (
    MAX_SAMPLE_WARNINGS,
    SKIP_REASONS,
    Batch,
    CollateFn,
    SampleFn,
    _shuffled,
    image_text_batches,
    stream_batches,
    worker_stream,
)
from annofree.data.tar_reading import (
    CorruptShardError,
    UngroupedShardError,
    check_grouped,
    iter_tar_samples,
    read_tar_samples,
)
from annofree.data.writer import ShardWriter

__all__ = [
    "CAPTION_EXTENSION",
    "FULL_SHARD",
    "IMAGE_EXTENSIONS",
    "MAKE_SHARDS",
    "MAX_SAMPLE_WARNINGS",
    "RETRY",
    "SHARD_SUFFIXES",
    "SKIP_REASONS",
    "TABLE_SUFFIXES",
    "Batch",
    "CollateFn",
    "CorruptShardError",
    "RetryPolicy",
    "SampleFn",
    "ShardSampling",
    "ShardSourceError",
    "ShardWriter",
    "TransientSourceError",
    "UngroupedShardError",
    "_shuffled",
    "check_grouped",
    "derive_seed",
    "expand_shards",
    "expand_sources",
    "image_text_batches",
    "iter_tar_samples",
    "open_shard",
    "read_shard",
    "read_tar_samples",
    "sample_rng",
    "split_shards",
    "stream_batches",
    "worker_stream",
]
