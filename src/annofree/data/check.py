"""A look at training shards before a long run: the library behind ``annofree data check SHARDS``.

For each shard (a tar of ``KEY.jpg`` + ``KEY.txt`` samples, as ``annofree data shards`` and img2dataset write them)
and in total, :func:`check_shards` counts

- the samples training can use (an image that decodes and a non-empty UTF-8 caption) and the corrupt ones, by
  the training reader's reasons (``missing_image``, ``missing_caption``, ``bad_caption``, ``corrupt_image``),
  naming the first few;
- caption lengths in CLIP tokens (without the start and end tokens) and in words: min, median, p95 and max
  (nearest rank), and how many captions do not fit the text encoder's context (``context_length`` counts the
  start and end tokens) and are cut;
- how many captions give at least one noun prompt for GroupViT's multi-label loss
  (:func:`annofree.data.captions.prompt_nouns`, the extraction training uses, with the config's ``stop_nouns``);
  the others fall back to the raw caption as their prompts;
- beside img2dataset shards, what its ``NNNNN_stats.json`` says: URLs tried and downloaded (link rot).

Shards are read as training reads them, local or remote (``pipe:``, HTTP(S), fsspec URLs:
:mod:`annofree.data.sources`, retries included). A shard that cannot be read to its end (missing, unreachable,
not a tar, truncated, samples not grouped by key) is reported with the reason, and its samples before the damage
are counted; it never stops the check. ``max_shards`` checks that many shards spread evenly over the list (a
sample of a huge corpus). Use::

    report = check_shards("shards/{00000..00331}.tar", max_shards=20)
    report.total["samples"], report.total["tokens"]["p95"], report.to_dict()  # JSON-ready
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from annofree.data.captions import prompt_nouns
from annofree.data.images import decode_image
from annofree.data.pool import map_in_processes
from annofree.data.shards import (
    CAPTION_EXTENSION,
    IMAGE_EXTENSIONS,
    CorruptShardError,
    ShardSourceError,
    expand_shards,
    read_shard,
)
from annofree.data.stream import RejectedSample, caption_text, image_extension
from annofree.data.tokenizer import CONTEXT_LENGTH, get_tokenizer
from annofree.errors import UserError

MAX_NAMED = 5  # corrupt samples named per shard and in total
STATS_SUFFIX = "_stats.json"  # img2dataset's per-shard download counts (and annofree data shards' own)


@dataclass
class ShardCheck:
    """What one shard holds. ``tokens`` and ``words`` are histograms (length -> captions), so that shards
    merge exactly and memory stays small whatever the corpus."""

    shard: str
    samples: int = 0
    corrupt: Counter = field(default_factory=Counter)
    corrupt_samples: list[str] = field(default_factory=list)
    error: str | None = None
    tokens: Counter = field(default_factory=Counter)
    words: Counter = field(default_factory=Counter)
    cut: int = 0
    with_noun: int = 0
    downloads: dict[str, int] | None = None  # img2dataset's {"tried", "downloaded"} for this shard

    def add_corrupt(self, reason: str, message: str) -> None:
        self.corrupt[reason] += 1
        if len(self.corrupt_samples) < MAX_NAMED:
            self.corrupt_samples.append(message)

    def merge(self, other: ShardCheck) -> None:
        self.samples += other.samples
        self.corrupt.update(other.corrupt)
        self.corrupt_samples += other.corrupt_samples[: MAX_NAMED - len(self.corrupt_samples)]
        self.tokens.update(other.tokens)
        self.words.update(other.words)
        self.cut += other.cut
        self.with_noun += other.with_noun
        if other.downloads is not None:
            mine = self.downloads or {"tried": 0, "downloaded": 0}
            self.downloads = {key: mine[key] + other.downloads[key] for key in mine}

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures."""
        summary: dict[str, Any] = {
            "samples": self.samples,
            "corrupt": sum(self.corrupt.values()),
            "corrupt_by_reason": dict(sorted(self.corrupt.items())),
            "corrupt_samples": list(self.corrupt_samples),
            "tokens": length_summary(self.tokens),
            "words": length_summary(self.words),
            "cut": self.cut,
            "with_noun_prompt": self.with_noun,
            "with_noun_prompt_fraction": round(self.with_noun / self.samples, 4) if self.samples else None,
        }
        if self.downloads is not None:
            summary["img2dataset"] = dict(self.downloads)
        return summary


@dataclass
class CheckReport:
    """The result of :func:`check_shards`: ``shards`` (each :class:`ShardCheck`, in list order), how many the
    data names (``listed``), the settings, and ``total`` (all checked shards merged; its ``unreadable`` lists
    the shards that could not be read to their end, with the reason)."""

    data: str
    listed: int
    context_length: int
    shards: list[ShardCheck]

    @property
    def unreadable(self) -> list[str]:
        return [f"{check.shard}: {check.error}" for check in self.shards if check.error is not None]

    @property
    def total(self) -> dict[str, Any]:
        merged = ShardCheck("total")
        for check in self.shards:
            merged.merge(check)
        return {"shards_checked": len(self.shards), "shards_listed": self.listed, **merged.summary(),
                "unreadable": self.unreadable}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "context_length": self.context_length,
            "total": self.total,
            "shards": [{"shard": check.shard, "error": check.error, **check.summary()} for check in self.shards],
        }


def length_summary(histogram: Counter) -> dict[str, int] | None:
    """``{"min", "median", "p95", "max"}`` of a length histogram (nearest rank); None when it is empty."""
    count = sum(histogram.values())
    if count == 0:
        return None
    lengths = sorted(histogram)

    def rank(fraction: float) -> int:
        wanted, seen = max(1, -(-count * fraction // 1)), 0
        for length in lengths:
            seen += histogram[length]
            if seen >= wanted:
                return length
        return lengths[-1]

    return {"min": lengths[0], "median": rank(0.5), "p95": rank(0.95), "max": lengths[-1]}


def spread(items: list[str], limit: int | None) -> list[str]:
    """At most ``limit`` of ``items``, spread evenly over the list (first and last included)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise UserError(f"max shards must be at least 1, got {limit}")
    if limit == 1:
        return items[:1]
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]


def check_shard(path: str, context_length: int = CONTEXT_LENGTH, stop_nouns: Iterable[str] = ()) -> ShardCheck:
    """Check one shard (see the module docstring); never raises for bad data."""
    check = ShardCheck(path, downloads=_img2dataset_downloads(path))
    stop_nouns = frozenset(stop_nouns)
    tokenizer = get_tokenizer()
    try:
        for key, caption, image in _samples(path, check):
            try:
                decode_image(image, f"{path}:{key}")
            except UserError as exc:
                check.add_corrupt("corrupt_image", str(exc))
                continue
            check.samples += 1
            tokens = len(tokenizer.encode(caption))
            check.tokens[tokens] += 1
            check.words[len(caption.split())] += 1
            check.cut += tokens + 2 > context_length  # start and end tokens take two places
            check.with_noun += bool(prompt_nouns(caption, stop_nouns))
    except (CorruptShardError, ShardSourceError) as exc:  # local or remote, as training reads them
        check.error = str(exc).removeprefix(f"{path}: ")
    return check


def _samples(path: str, check: ShardCheck) -> Iterator[tuple[str, str, bytes]]:
    """``(key, caption, image bytes)`` of the samples with an image and a non-empty UTF-8 caption, as training
    reads them; the others are counted in ``check`` by the training reader's reasons."""
    for key, files in read_shard(path, (*IMAGE_EXTENSIONS, CAPTION_EXTENSION)):
        try:
            extension, caption = image_extension(files), caption_text(files)
        except RejectedSample as rejected:
            check.add_corrupt(rejected.reason, f"{path}:{key}: {rejected.detail}")
            continue
        yield key, caption, files[extension]


def _img2dataset_downloads(path: str) -> dict[str, int] | None:
    """img2dataset's download counts of this shard (``NNNNN_stats.json`` beside it), or None."""
    name = os.path.basename(path)
    stats_path = os.path.join(os.path.dirname(path), name.split(".", 1)[0] + STATS_SUFFIX)
    try:
        with open(stats_path, encoding="utf-8") as file:
            stats = json.load(file)
        return {"tried": int(stats["count"]), "downloaded": int(stats["successes"])}
    except (OSError, ValueError, KeyError, TypeError):  # none, or not img2dataset's (annofree's own differ)
        return None


class _CheckJob:
    """``check_shard`` with fixed settings (picklable, for worker processes)."""

    def __init__(self, context_length: int, stop_nouns: frozenset[str]):
        self.context_length = context_length
        self.stop_nouns = stop_nouns

    def __call__(self, path: str) -> ShardCheck:
        return check_shard(path, self.context_length, self.stop_nouns)


def check_shards(
    data: str,
    context_length: int = CONTEXT_LENGTH,
    stop_nouns: Iterable[str] = (),
    max_shards: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check the shards that ``data`` names (as ``--data`` takes them: a folder, a brace pattern, a list); see
    the module docstring. ``workers`` processes check shards in parallel; ``progress(done, total)`` is called
    with the shards done. A ``data`` naming no shard is a ``UserError``."""
    if context_length < 2:
        raise UserError(f"context length must be at least 2 (start and end token), got {context_length}")
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    listed = expand_shards(data)
    chosen = spread(listed, max_shards)
    job = _CheckJob(context_length, frozenset(word.strip().lower() for word in stop_nouns))
    checks: list[ShardCheck] = []
    if progress is not None:
        progress(0, len(chosen))
    for check in map_in_processes(job, chosen, workers):
        checks.append(check)
        if progress is not None:
            progress(len(checks), len(chosen))
    return CheckReport(data, len(listed), context_length, checks)
