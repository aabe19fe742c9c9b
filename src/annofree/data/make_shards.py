"""Webdataset shards from caption data as users have it: the library behind ``annofree data shards SRC OUT``.

``SRC`` is either

- a folder of images (searched recursively for ``IMAGE_SUFFIXES``, hidden files and folders passed over, in
  sorted path order), each captioned by the text file beside it with the same name and ``.txt``
  (``photos/a/cat.jpg`` + ``photos/a/cat.txt``); or
- a table, one sample a row: CSV (``.csv``), TSV (``.tsv``) or parquet (``.parquet``, read with pyarrow: the
  ``parquet`` extra) with a column of image paths (relative ones are read from the table's folder) and a column
  of captions. Unless named, the columns are the first present of ``IMAGE_COLUMNS`` and ``CAPTION_COLUMNS``
  (img2dataset's ``url``/``caption``, open_clip's ``filepath``/``title``, ...). Only local files for now: an
  image column holding URLs is refused (img2dataset downloads them into shards that train as they are).

``OUT`` gets img2dataset's layout: shards ``000000.tar``, ``000001.tar``, ... whose samples are ``KEY.jpg`` (or
``.png``/``.webp``) + ``KEY.txt`` + ``KEY.json`` (``key``, ``url``: the image as the source names it, ``caption``,
``width``, ``height``), with ``NNNNNN_stats.json`` beside each shard (its samples, and the ones skipped, by reason
and by name) and ``shards.json`` (the source and options they were made from). Entry ``i`` of the source gets
key ``f"{i:09d}"`` and goes into shard ``i // samples_per_shard``, so the shards depend on nothing but the source
and ``samples_per_shard`` (not on ``workers``). A shard holds fewer samples when some of its entries are skipped,
as img2dataset's do: an image file that is missing or does not decode is skipped (``missing_image``,
``corrupt_image``), so is a missing caption (``missing_caption``) or an empty or non-UTF-8 one (``bad_caption``);
all are counted and named. JPEG, PNG and WebP files are stored as they are, other formats as JPEG (quality 95).

Shards are written by a pool of worker processes, each to a temporary name renamed once complete, then its
stats file. A rerun with the same source and options keeps the shards that have their stats file and writes
the others, so an interrupted run resumes; a different source or different options are refused. Use::

    summary = make_shards("photos", "shards", samples_per_shard=1000)
    summary.pattern  # 'shards/{000000..000012}.tar': the training data (``--data``), or just 'shards'
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annofree.data.image_folder import list_images
from annofree.data.images import decode_image
from annofree.data.layout import SHARD_SUFFIXES, TABLE_SUFFIXES
from annofree.data.pool import map_in_processes
from annofree.data.writer import ShardWriter
from annofree.errors import UserError

IMAGE_COLUMNS = ("url", "filepath", "image", "path", "file")  # img2dataset's, open_clip's, then common names
CAPTION_COLUMNS = ("caption", "title", "text")  # img2dataset's, open_clip's, then a common name
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
PARQUET_EXTRA = "pip install 'annofree[parquet]'"
MANIFEST_NAME = "shards.json"
STATS_SUFFIX = "_stats.json"
MAX_NAMED = 10  # skipped samples named in a summary; the stats files name them all
_STORED_AS_IS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG and PNG signatures (WebP: checked apart)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Entry:
    """One sample to make: ``image`` is the file to read, ``source`` names it as the source does (a path under
    the folder, or the table's cell), ``name`` says where it is in messages. The caption is ``caption`` (a
    table's) or, when that is None, the contents of ``caption_file`` (a folder's)."""

    source: str
    name: str
    image: str
    caption: str | None = None
    caption_file: str | None = None


@dataclass
class Source:
    """What ``SRC`` holds: its entries in order, and the table columns they were read from (None: a folder)."""

    path: Path
    entries: list[Entry]
    image_column: str | None = None
    caption_column: str | None = None


@dataclass
class ShardsSummary:
    """What :func:`make_shards` did. ``written`` shards were made by this call and ``kept`` by an earlier one;
    ``samples`` and ``skipped`` (by reason) count all of them; ``skipped_samples`` names the first skipped
    ones (``MAX_NAMED``; the stats files name them all); ``failed`` lists the shards that could not be written
    (rerun to retry them), with the reason."""

    out: Path
    shards: int
    written: int = 0
    kept: int = 0
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_samples: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def pattern(self) -> str:
        """A brace pattern naming the shards (a plain path when there is one), ready for ``--data``."""
        if self.shards == 1:
            return str(self.out / shard_name(0))
        return str(self.out / f"{{{0:06d}..{self.shards - 1:06d}}}.tar")


def shard_name(number: int) -> str:
    return f"{number:06d}.tar"


def stats_name(number: int) -> str:
    return f"{number:06d}{STATS_SUFFIX}"


# -------------------------------------------------------------------------------------------- the source


def read_source(src: str | Path, image_column: str | None = None, caption_column: str | None = None) -> Source:
    """The entries of a folder of captioned images or of a caption table, in order (module docstring)."""
    path = Path(os.path.expanduser(str(src)))
    if path.is_dir():
        if image_column is not None or caption_column is not None:
            raise UserError(
                f"{path}: a folder (captions come from .txt files beside the images); columns are for tables"
            )
        return Source(path, _folder_entries(path))
    if not path.is_file():
        raise UserError(f"{path}: no such folder or file")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise UserError(f"{path}: give a folder of images with .txt captions, or a table ({', '.join(TABLE_SUFFIXES)})")
    image_column, caption_column, rows = _table_rows(path, image_column, caption_column)
    return Source(path, _table_entries(path, rows), image_column, caption_column)


def _folder_entries(root: Path) -> list[Entry]:
    entries = []
    for image in list_images(root):
        relative = Path(image).relative_to(root).as_posix()
        entries.append(Entry(relative, relative, image, caption_file=os.path.splitext(image)[0] + ".txt"))
    return entries


def _table_entries(path: Path, rows: Iterable[tuple[object, object]]) -> list[Entry]:
    entries = []
    for number, (image, caption) in enumerate(rows, start=1):
        image = "" if image is None else str(image).strip()
        if _URL.match(image):
            raise UserError(
                f"{path}: row {number}: {image!r} is a URL; downloading is not supported yet: give local image "
                "paths, or download with img2dataset, whose shards train as they are"
            )
        resolved = str(path.parent / os.path.expanduser(image)) if image else ""
        entries.append(
            Entry(image, f"{path.name} row {number} ({image})", resolved, "" if caption is None else str(caption))
        )
    if not entries:
        raise UserError(f"{path}: the table has no rows")
    return entries


def _table_rows(
    path: Path, image_column: str | None, caption_column: str | None
) -> tuple[str, str, list[tuple[object, object]]]:
    """``(image column, caption column, [(image, caption) per row])`` of a CSV, TSV or parquet table."""
    if path.suffix.lower() == ".parquet":
        return _parquet_rows(path, image_column, caption_column)
    delimiter = TABLE_DELIMITERS[path.suffix.lower()]
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise UserError(f"{path}: empty table (no header line naming the columns)")
            image, caption = _choose_columns(path, header, image_column, caption_column)
            i, j = header.index(image), header.index(caption)
            rows = [(_cell(row, i), _cell(row, j)) for row in reader if row]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable table ({exc})") from None
    return image, caption, rows


def _cell(row: list[str], index: int) -> str | None:
    return row[index] if index < len(row) else None


def _parquet_rows(
    path: Path, image_column: str | None, caption_column: str | None
) -> tuple[str, str, list[tuple[object, object]]]:
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        raise UserError(f"{path}: reading parquet needs pyarrow: {PARQUET_EXTRA}") from None
    try:
        columns = parquet.read_schema(path).names
        image, caption = _choose_columns(path, columns, image_column, caption_column)
        table = parquet.read_table(path, columns=[image, caption])
    except (pyarrow.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None
    return image, caption, list(zip(table.column(image).to_pylist(), table.column(caption).to_pylist(), strict=True))


def _choose_columns(
    path: Path, columns: list[str], image_column: str | None, caption_column: str | None
) -> tuple[str, str]:
    return (
        _choose_column(path, columns, image_column, IMAGE_COLUMNS, "image paths", "--image-column"),
        _choose_column(path, columns, caption_column, CAPTION_COLUMNS, "captions", "--caption-column"),
    )


def _choose_column(
    path: Path, columns: list[str], given: str | None, candidates: tuple[str, ...], holding: str, option: str
) -> str:
    if given is not None:
        if given not in columns:
            raise UserError(f"{path}: no column {given!r} (its columns: {', '.join(columns)})")
        return given
    by_name = {column.lower(): column for column in reversed(columns)}
    found = next((by_name[name] for name in candidates if name in by_name), None)
    if found is None:
        raise UserError(
            f"{path}: no column named {' or '.join(candidates)} for the {holding} (its columns: {', '.join(columns)}); "
            f"name it with {option}"
        )
    return found


# ---------------------------------------------------------------------------------------- the output


def _manifest(source: Source, samples_per_shard: int) -> dict:
    digest = hashlib.sha256()
    for entry in source.entries:
        digest.update(json.dumps([entry.source, entry.image, entry.caption, entry.caption_file]).encode("utf-8"))
    return {
        "source": str(source.path.resolve()),
        "image_column": source.image_column,
        "caption_column": source.caption_column,
        "samples_per_shard": samples_per_shard,
        "entries": len(source.entries),
        "shards": -(-len(source.entries) // samples_per_shard),
        "fingerprint": digest.hexdigest(),
    }


def _claim(out: Path, manifest: dict) -> None:
    """Make ``out`` the home of these shards: refuse one holding other shards or shards of another source or
    other options; remove the temporary files of an interrupted run; write the manifest."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            earlier = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise UserError(f"{manifest_path}: unreadable ({exc}); give a new OUT") from None
        differences = [
            f"{key} was {earlier.get(key)!r}, now {manifest[key]!r}"
            for key in ("source", "image_column", "caption_column", "samples_per_shard")
            if earlier.get(key) != manifest[key]
        ]
        if not differences and earlier.get("fingerprint") != manifest["fingerprint"]:
            differences = ["the source's images, captions or rows changed since"]
        if differences:
            raise UserError(
                f"{out}: holds shards made otherwise ({'; '.join(differences)}); rerun with the same source and "
                "options to resume, or give a new OUT"
            )
    elif out.is_dir() and any(path.name.endswith(SHARD_SUFFIXES) for path in out.iterdir()):
        raise UserError(
            f"{out}: holds shards that `annofree data shards` did not make (no {MANIFEST_NAME}); give a new OUT"
        )
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # a killed run's: this run rewrites every shard that has no stats file
        stale.unlink(missing_ok=True)
    _write_json(manifest_path, manifest)


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _finished(out: Path, number: int) -> dict | None:
    """The stats of shard ``number`` if an earlier run completed it, else None."""
    try:
        stats = json.loads((out / stats_name(number)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stats if (out / shard_name(number)).is_file() else None


# ------------------------------------------------------------------------------------- writing shards


@dataclass(frozen=True)
class _ShardJob:
    out: str
    number: int
    first_key: int
    entries: tuple[Entry, ...]


class _Skip(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _write_shard(job: _ShardJob) -> dict:
    """Write one shard and then its stats file; run in a worker process. Returns the stats, or
    ``{"shard": ..., "error": ...}`` if the shard could not be written (nothing of it is left then)."""
    skipped: list[dict] = []
    try:
        with ShardWriter(job.out, samples_per_shard=len(job.entries), first_shard=job.number) as writer:
            for offset, entry in enumerate(job.entries):
                key = f"{job.first_key + offset:09d}"
                try:
                    image, caption, (height, width) = _read_sample(entry)
                except _Skip as skip:
                    skipped.append({"source": entry.source, "reason": skip.reason, "message": str(skip)})
                    continue
                extra = {"key": key, "url": entry.source, "caption": caption, "width": width, "height": height}
                writer.write(key, image, caption, extra)
            writer.close(keep_empty=True)
        stats = {
            "shard": shard_name(job.number),
            "entries": len(job.entries),
            "samples": writer.num_samples,
            "skipped": _count(item["reason"] for item in skipped),
            "skipped_samples": skipped,
        }
        _write_json(Path(job.out) / stats_name(job.number), stats)
    except OSError as exc:
        return {"shard": shard_name(job.number), "error": f"{exc.__class__.__name__}: {exc}"}
    return stats


def _read_sample(entry: Entry) -> tuple[np.ndarray | bytes, str, tuple[int, int]]:
    """``(image to store, caption, (height, width))`` of an entry, or ``_Skip`` saying why it cannot be a sample."""
    if not entry.image or not os.path.isfile(entry.image):
        raise _Skip("missing_image", f"{entry.name}: no such image file")
    caption = entry.caption
    if caption is None:
        try:
            caption = Path(entry.caption_file).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise _Skip("missing_caption", f"{entry.name}: no caption file {Path(entry.caption_file).name}") from None
        except UnicodeDecodeError:
            raise _Skip("bad_caption", f"{entry.name}: caption file is not UTF-8") from None
    caption = caption.strip()
    if not caption:
        raise _Skip("bad_caption", f"{entry.name}: empty caption")
    try:
        data = Path(entry.image).read_bytes()
    except OSError as exc:
        raise _Skip("corrupt_image", f"{entry.name}: unreadable ({exc.strerror or exc})") from None
    try:
        decoded = decode_image(data, entry.name)
    except UserError as exc:
        raise _Skip("corrupt_image", str(exc)) from None
    stored_as_is = data.startswith(_STORED_AS_IS) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    return (data if stored_as_is else decoded), caption, decoded.shape[:2]


def _count(reasons: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def make_shards(
    src: str | Path,
    out: str | Path,
    samples_per_shard: int = 1000,
    image_column: str | None = None,
    caption_column: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ShardsSummary:
    """Write the shards of ``src`` (a folder of captioned images or a caption table) into ``out``; see the
    module docstring. ``workers`` processes write shards (default: the cores, at most 8); ``progress(done,
    total)`` is called with the entries done after each shard. Returns what was done, also on a rerun that
    had nothing left to do."""
    if samples_per_shard < 1:
        raise UserError(f"samples per shard must be at least 1, got {samples_per_shard}")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    source = read_source(src, image_column, caption_column)
    out = Path(os.path.expanduser(str(out)))
    manifest = _manifest(source, samples_per_shard)
    _claim(out, manifest)
    summary = ShardsSummary(out, manifest["shards"])
    results: dict[int, dict] = {}
    jobs = []
    for number in range(summary.shards):
        earlier = _finished(out, number)
        if earlier is not None:
            results[number] = earlier
            continue
        first = number * samples_per_shard
        jobs.append(_ShardJob(str(out), number, first, tuple(source.entries[first : first + samples_per_shard])))
    summary.kept = len(results)
    done = sum(stats["entries"] for stats in results.values())
    if progress is not None:
        progress(done, len(source.entries))
    written = map_in_processes(_write_shard, jobs, workers or min(8, os.cpu_count() or 1))
    for job, stats in zip(jobs, written, strict=True):
        results[job.number] = stats
        summary.written += "error" not in stats
        done += len(job.entries)
        if progress is not None:
            progress(done, len(source.entries))
    for number in range(summary.shards):
        _add_to_summary(summary, results[number])
    return summary


def _add_to_summary(summary: ShardsSummary, stats: dict) -> None:
    if "error" in stats:
        summary.failed.append(f"{summary.out / stats['shard']}: {stats['error']}")
        return
    summary.samples += stats["samples"]
    for reason, count in stats["skipped"].items():
        summary.skipped[reason] = summary.skipped.get(reason, 0) + count
    room = MAX_NAMED - len(summary.skipped_samples)
    summary.skipped_samples += [item["message"] for item in stats["skipped_samples"][:room]]
