"""Writing files so that a crash or a full disk never leaves a half-written file in place.

::

    from annofree.io import atomic_write

    atomic_write("runs/x/results.json", lambda tmp: Path(tmp).write_text(text))

:func:`atomic_write` hands the writer a temporary path beside the target, fsyncs what it wrote and renames it
onto the target in one step; the file gets the mode a plain ``open(path, "w")`` would give it. A failed write
caused by the disk (full, read-only, no permission) is a one-line :class:`~annofree.folders.DiskError` naming
the target, which is left as it was. Temporary files of a killed process (``.NAME.XXXXXXXX.tmp``) are removed
by :func:`annofree.folders.open_out_dir`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from annofree.folders import disk_error


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path`` in one step.

    A write that fails for a reason of the disk (full, read-only, no permission) raises a one-line
    :class:`~annofree.folders.DiskError` naming ``path``; ``path`` itself is never touched by a failed write.
    """
    path = Path(path)
    tmp, failure = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes 0600 files; give the usual mode instead
        os.replace(tmp, path)
    except Exception as exc:
        failure = disk_error(path, exc)  # before the partial file goes: it shows a disk that filled up
        if failure is None:
            raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    if failure is not None:  # raised outside the handler: the failed writer (and its open file) is freed now
        raise failure


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0666 minus the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    return 0o666 & ~process_umask()


def process_umask() -> int:
    """The process umask. Linux tells it in /proc; elsewhere the only way is to set it and put it back, which
    another thread creating a file in between would see, so that is the fallback only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
