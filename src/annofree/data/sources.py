"""Where shards come from: naming them (patterns, folders, lists, mixtures of sources) and opening them.

``data`` names the shards of one or more sources::

    shards/{000000..000099}.tar                      local files (a brace pattern, a file, a folder)
    pipe:aws s3 cp s3://bucket/{00000..00329}.tar -  a command whose stdout is the tar stream
    https://host/cc3m/{00000..00331}.tar             streamed over HTTP(S) (urllib; never downloaded whole)
    s3://bucket/{00000..00329}.tar                   any fsspec URL (s3://, gs://, hf://, ...): needs the
                                                     ``remote`` extra (fsspec) and the protocol's backend
    a/{000..009}.tar,b/extra.tar                     a comma-separated list of the above: one source
    cc3m/{000..331}.tar::cc12m/{0000..1242}.tar      several sources (a mixture; see annofree.data.sampling)

:func:`expand_sources` gives each source's shard list and :func:`expand_shards` all shards in order. Local
parts are checked at once (``UserError`` naming what is missing); URLs are only checked for a reader (a
missing fsspec backend is a one-line ``UserError`` naming the package), since listing remote shards would
cost a request each.

:func:`read_shard` streams one shard's samples from wherever it is. Transient errors (a dropped connection,
a timeout, HTTP 5xx / 429, a ``pipe:`` command that fails) are retried after a back-off (:data:`RETRY`); a
retry passes over the samples already given, so a shard read in two tries gives exactly what one read
gives. A shard that still fails raises ``ShardSourceError``; the stream skips it (annofree.data.stream).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from braceexpand import braceexpand

from annofree.data.layout import MAKE_SHARDS, SHARD_SUFFIXES, TABLE_SUFFIXES
from annofree.data.tar_reading import CorruptShardError, Samples, read_tar_samples
from annofree.errors import UserError

logger = logging.getLogger(__name__)

SOURCE_SEPARATOR = "::"  # between the sources of a mixture, as open_clip's --train-data
PIPE_PREFIX = "pipe:"
HTTP_TIMEOUT_S = 60.0  # per connection attempt and per read of an HTTP(S) shard
REMOTE_EXTRA = "pip install 'annofree[remote]'"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """How often a shard is tried and how long to wait in between (doubling from ``first_delay_s``)."""

    attempts: int = 4  # tries in all
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay(self, failed_attempts: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** (failed_attempts - 1))


RETRY = RetryPolicy()  # 4 tries, waiting 1, 2 and 4 s: a shard gives up after about 7 s of waiting


class ShardSourceError(UserError):
    """A shard could not be opened or read from its source (after the retries, when its error was transient)."""


class TransientSourceError(ShardSourceError):
    """A read error that another try may not meet: a dropped connection, a timeout, a server error, a failed
    ``pipe:`` command."""


# ------------------------------------------------------------------------------------------ naming shards


def is_url(part: str) -> bool:
    """Whether ``part`` names a non-local shard (``pipe:...`` or ``SCHEME://...`` other than ``file://``)."""
    return part.startswith(PIPE_PREFIX) or (bool(_URL.match(part)) and not part.startswith("file://"))


def expand_sources(data: str) -> list[list[str]]:
    """The shards of each source that ``data`` names (sources are separated by ``::``), in order, each once.

    A source is a brace pattern, a single tar file, a directory (its ``.tar``/``.tar.gz``/``.tgz`` files,
    sorted), a URL or URL pattern, or a comma-separated list of those. Anything local that is missing, and
    a URL without a reader, is a ``UserError`` naming the part of ``data`` at fault.
    """
    texts = [text.strip() for text in split_outside_braces(data, SOURCE_SEPARATOR)]
    if not any(texts):
        raise UserError(f"no shards given (data={data!r})")
    if not all(texts):
        raise UserError(f"{data}: an empty source between '{SOURCE_SEPARATOR}' separators")
    return [_expand_source(text) for text in texts]


def expand_shards(data: str) -> list[str]:
    """All the shards that ``data`` names, source after source, each once (see :func:`expand_sources`)."""
    return list(dict.fromkeys(shard for source in expand_sources(data) for shard in source))


def _expand_source(text: str) -> list[str]:
    parts = [part.strip() for part in split_outside_braces(text, ",") if part.strip()]
    if not parts:
        raise UserError(f"no shards given (data={text!r})")
    shards: list[str] = []
    for part in parts:
        shards.extend(_expand_url(part) if is_url(part) else _expand_local(part))
    for shard in shards:
        name = shard.split("?", 1)[0]
        if not shard.startswith(PIPE_PREFIX) and name.lower().endswith(TABLE_SUFFIXES):
            raise UserError(
                f"{shard}: a table, not webdataset shards (tar files of KEY.jpg + KEY.txt); make shards from it with "
                f"`annofree data shards {shard} OUT`, then give OUT as the data"
            )
    return list(dict.fromkeys(shards))


def _expand_url(part: str) -> list[str]:
    urls = list(braceexpand(part)) if "{" in part else [part]
    check_reader(urls[0])
    return urls


def _expand_local(part: str) -> list[str]:
    expanded = os.path.expanduser(part.removeprefix("file://"))
    if "{" in expanded:
        candidates = list(braceexpand(expanded))
        missing = [path for path in candidates if not os.path.isfile(path)]
        if missing:
            count = f"{len(missing)} of {len(candidates)}"
            raise UserError(f"{part}: {count} shard files do not exist (first: {missing[0]})")
        return candidates
    if os.path.isdir(expanded):
        found = sorted(
            str(path) for path in Path(expanded).iterdir() if path.is_file() and path.name.endswith(SHARD_SUFFIXES)
        )
        if not found:
            raise UserError(f"{part}: directory holds no shard files ({', '.join(SHARD_SUFFIXES)}); {MAKE_SHARDS}")
        return found
    if os.path.isfile(expanded):
        return [expanded]
    raise UserError(f"{part}: no such shard file or directory")


def split_outside_braces(text: str, separator: str) -> list[str]:
    """Split at each ``separator`` that is not inside ``{...}`` (a brace pattern) or ``[...]`` (an IPv6 host)."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            index += len(separator)
            start = index
            continue
        index += 1
    parts.append(text[start:])
    return parts


def local_sizes(shards: list[str]) -> list[int] | None:
    """The byte sizes of the shards when all are local files (None otherwise: asking costs a request each)."""
    if any(is_url(shard) for shard in shards):
        return None
    return [os.path.getsize(shard) for shard in shards]


# ---------------------------------------------------------------------------------------- opening shards


def check_reader(url: str) -> None:
    """Raise a one-line ``UserError`` if nothing installed can read ``url`` (an fsspec URL needs fsspec and the
    protocol's backend)."""
    if url.startswith(PIPE_PREFIX) or not is_url(url) or url.startswith(("http://", "https://")):
        return
    protocol = url.split("://", 1)[0]
    try:
        import fsspec
    except ImportError:
        raise UserError(f"{url}: reading {protocol}:// URLs needs fsspec: {REMOTE_EXTRA}") from None
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "its backend is not installed"
        raise UserError(
            f"{url}: reading {protocol}:// URLs needs the fsspec backend for {protocol} ({message}): {REMOTE_EXTRA} "
            f"and the backend package (s3fs, gcsfs, huggingface_hub, ...)"
        ) from None
    except ValueError:
        raise UserError(f"{url}: no reader for {protocol}:// URLs (fsspec does not know the protocol)") from None


def open_shard(url: str) -> BinaryIO:
    """A binary stream of the shard ``url`` (a local path, ``pipe:COMMAND``, ``http(s)://`` or an fsspec URL),
    read front to back. Raises ``ShardSourceError`` (``TransientSourceError`` when a retry may help); reads
    raise ``TransientSourceError`` for a lost connection or a failed command."""
    if url.startswith(PIPE_PREFIX):
        raw: io.RawIOBase = _PipeStream(url)
    elif url.startswith(("http://", "https://")):
        raw = _HttpStream(url)
    elif is_url(url):
        raw = _FsspecStream(url)
    else:
        try:
            return open(url.removeprefix("file://"), "rb")
        except OSError as exc:
            raise ShardSourceError(f"{url}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    return io.BufferedReader(raw, buffer_size=_READ_CHUNK)


def read_shard(url: str, extensions: Iterable[str] | None = None, retry: RetryPolicy | None = None) -> Samples:
    """The samples of the shard ``url`` as ``(key, {extension: bytes})`` (see
    :func:`annofree.data.tar_reading.read_tar_samples`), tried again after a transient error.

    Each sample is passed on once the next one has started or the shard has ended, so that a sample cut by a
    lost connection is read again whole by the next try, which passes over those already given. When the
    tries are spent, or the error is not transient, the sample in hand is passed on (as a damaged local shard
    gives it) and ``ShardSourceError`` or ``CorruptShardError`` is raised."""
    retry = retry or RETRY
    delivered = 0
    for attempt in range(1, retry.attempts + 1):
        held: tuple[str, dict[str, bytes]] | None = None
        try:
            with open_shard(url) as stream:
                for index, sample in enumerate(read_tar_samples(stream, url, extensions)):
                    if index < delivered:  # given by an earlier try
                        continue
                    if held is not None:
                        yield held
                        delivered += 1
                    held = sample
            if held is not None:
                yield held
            return
        except TransientSourceError as exc:
            if attempt == retry.attempts:
                if held is not None:
                    yield held
                raise ShardSourceError(f"{exc} (gave up after {attempt} tries)") from None
            delay = retry.delay(attempt)
            logger.info("retrying in %.1f s (try %d of %d): %s", delay, attempt + 1, retry.attempts, exc)
            time.sleep(delay)
        except (CorruptShardError, ShardSourceError):
            if held is not None:
                yield held
            raise


class _PipeStream(io.RawIOBase):
    """The stdout of ``pipe:COMMAND`` (run by the shell in its own process group). A command that exits with
    an error is a ``TransientSourceError`` carrying the end of its stderr; closing early stops the command."""

    def __init__(self, url: str):
        self.url = url
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the stream)
        try:
            self.process = subprocess.Popen(
                url[len(PIPE_PREFIX) :],
                shell=True,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                bufsize=0,  # unbuffered: a read returns what the command has written so far
                start_new_session=True,
            )
        except OSError as exc:
            self.stderr.close()
            raise TransientSourceError(f"{url}: the command could not start ({exc})") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.process.stdout.readinto(buffer)
        if count == 0:
            status = self.process.wait()
            if status != 0:
                tail = self._stderr_tail()
                raise TransientSourceError(f"{self.url}: the command exited with status {status}: {tail}")
        return count

    def _stderr_tail(self, limit: int = 300) -> str:
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 4096))
        lines = [line.strip() for line in self.stderr.read().decode("utf-8", errors="replace").splitlines()]
        text = " | ".join(line for line in lines if line) or "no message on stderr"
        return text[-limit:]

    def close(self) -> None:
        if self.closed:
            return
        if self.process.poll() is None:  # stopped before the end (the stream moved on): stop the command
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
        self.process.stdout.close()
        self.process.wait()
        self.stderr.close()
        super().close()


_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class _HttpStream(io.RawIOBase):
    """The body of an HTTP(S) response, streamed. A body shorter than its Content-Length, a reset connection
    or a timeout is a ``TransientSourceError``; so are HTTP 408, 425, 429 and 5xx answers."""

    def __init__(self, url: str):
        self.url = url
        request = urllib.request.Request(url, headers={"User-Agent": "annofree"})
        try:
            self.response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            error = TransientSourceError if exc.code in _TRANSIENT_HTTP or exc.code >= 500 else ShardSourceError
            raise error(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientSourceError(f"{url}: cannot connect ({reason})") from None
        length = self.response.headers.get("Content-Length")
        self.expected = int(length) if length and length.isdigit() else None
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            count = self.response.readinto(buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise TransientSourceError(
                f"{self.url}: connection lost after {self.received} bytes ({exc.__class__.__name__}: {exc})"
            ) from None
        if count == 0 and self.expected is not None and self.received < self.expected:
            raise TransientSourceError(f"{self.url}: connection closed after {self.received} of {self.expected} bytes")
        self.received += count
        return count

    def close(self) -> None:
        if not self.closed:
            self.response.close()
        super().close()


class _FsspecStream(io.RawIOBase):
    """A file opened through fsspec (its backends read in blocks, they do not download the file first). A
    missing file or a refused permission is a ``ShardSourceError``; any other error is transient."""

    _PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

    def __init__(self, url: str):
        import fsspec  # checked by check_reader when the data was named

        self.url = url
        try:
            self.file = fsspec.open(url, "rb").open()
        except self._PERMANENT as exc:
            raise ShardSourceError(f"{url}: cannot be read ({exc.__class__.__name__}: {exc})") from None
        except Exception as exc:  # the backends raise their own errors (botocore, aiohttp, ...)
            raise TransientSourceError(f"{url}: cannot open ({exc.__class__.__name__}: {exc})") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.file.read(len(buffer))
        except self._PERMANENT as exc:
            raise ShardSourceError(f"{self.url}: cannot be read ({exc.__class__.__name__}: {exc})") from None
        except Exception as exc:
            raise TransientSourceError(f"{self.url}: read failed ({exc.__class__.__name__}: {exc})") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.file.close()
        super().close()
