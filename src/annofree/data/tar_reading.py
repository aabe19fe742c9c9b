"""Reading the samples of one tar shard as a stream: from a local file, a pipe, or a network response alike.

:func:`read_tar_samples` reads any binary file object front to back without seeking (plain or compressed tar),
so a shard can come from a command's stdout or an HTTP body (:mod:`annofree.data.sources` opens those);
:func:`iter_tar_samples` reads a local file. A shard that stops before its end-of-archive block or whose
samples are not grouped by key gives the samples read before the problem, then raises.
"""

from __future__ import annotations

import itertools
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from annofree.data.layout import MAKE_SHARDS, split_member_name
from annofree.errors import UserError

Samples = Iterator[tuple[str, dict[str, bytes]]]


class CorruptShardError(UserError):
    """A shard could not be read to its end (truncated or damaged); the samples before the damage were read."""


class UngroupedShardError(CorruptShardError):
    """A shard whose samples are not grouped by key: a key's members come back after another key's, as in
    ``tar cf x.tar -C folder .``, which stores files in directory order. A tar is read as a stream (it may be
    compressed, or come through a pipe or over HTTP), so such a shard cannot be read correctly; the samples
    before the first member out of place were read."""

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


class _EndNotingInfo(tarfile.TarInfo):
    """Notes on the archive which header ended it (``stopped_at``): tarfile stops quietly at a missing or
    damaged header after the first one, where a complete archive has an end-of-archive block of zeros."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            tar.stopped_at = exc
            raise


def check_grouped(path: str, max_members: int = 100_000) -> None:
    """Raise ``UngroupedShardError`` if the samples among the first ``max_members`` members of the local shard
    ``path`` are not grouped by key. Reads tar headers only (seeking over the data of an uncompressed tar);
    a shard that cannot be read is left to the reader, which reports damage as it meets it."""
    grouping = _KeyGrouping(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in itertools.islice(tar, max_members):
                split = split_member_name(member.name) if member.isfile() else None
                if split is not None:
                    grouping.starts_sample(split[0])
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return


def iter_tar_samples(path: str, extensions: Iterable[str] | None = None) -> Samples:
    """Stream the samples of the local shard ``path`` as ``(key, {extension: bytes})``, in tar order (see
    :func:`read_tar_samples`); a file that cannot be opened raises ``CorruptShardError`` too."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed below, also when the caller stops early)
    except OSError as exc:
        raise CorruptShardError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    with file:
        yield from read_tar_samples(file, path, extensions)


def read_tar_samples(file: BinaryIO, name: str, extensions: Iterable[str] | None = None) -> Samples:
    """Stream the samples of the tar read from ``file`` (front to back, no seeking) as ``(key, {extension:
    bytes})``, in tar order; ``name`` names the shard in errors.

    Members whose names share the part before the first dot of the file name form one sample (the
    webdataset rule); extensions are lower-cased, and only those in ``extensions`` (all when None) are
    read, the rest are passed over. Hidden files and directories are ignored. If the shard is truncated or
    damaged, the samples before the damage are yielded (the last one perhaps incomplete), then
    ``CorruptShardError`` is raised; if a sample's members are not adjacent, the samples before are yielded,
    then ``UngroupedShardError`` is raised. Errors of ``file`` itself other than ``OSError`` pass through.
    """
    wanted = None if extensions is None else set(extensions)
    grouping = _KeyGrouping(name)
    key: str | None = None
    files: dict[str, bytes] = {}
    problem: str | None = None
    try:
        with tarfile.open(fileobj=file, mode="r|*", tarinfo=_EndNotingInfo) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                split = split_member_name(member.name)
                if split is None:
                    continue
                member_key, extension = split
                if grouping.starts_sample(member_key):
                    if key is not None:
                        yield key, files
                    key, files = member_key, {}
                if wanted is None or extension in wanted:
                    files[extension] = tar.extractfile(member).read()
            end = getattr(tar, "stopped_at", None)
            if not isinstance(end, tarfile.EOFHeaderError):
                problem = f"ends without an end-of-archive block at byte {tar.offset} (truncated?)"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        problem = f"{exc.__class__.__name__}: {exc}"
    if key is not None:
        yield key, files
    if problem is not None:
        raise CorruptShardError(f"{name}: damaged shard, the rest of it is skipped ({problem})")
