"""Output folders: made ready before any work, held by one writer at a time, and disk errors said in one line.

Every command that writes a folder (``train``'s run folder, ``segment --out``, ...) opens it with
:func:`open_out_dir`, which in this order

1. creates the folder and writes and removes a probe file, so that a read-only or full disk, or a missing
   permission, is a one-line :class:`DiskError` before minutes of set-up rather than a traceback after them;
2. takes the folder's lock (:class:`FolderLock`, the file ``.annofree.lock``): a second writer is refused
   with a message naming the holder (pid, host, command, since when). The lock is a POSIX record lock, so
   the kernel drops it when its process dies, however it dies: the lock of a dead process is simply taken
   over. It is not inherited by forked children (data-loading workers);
3. removes the temporary files that a killed :func:`annofree.io.atomic_write` left behind
   (``.NAME.XXXXXXXX.tmp``): with the lock held, no live writer owns them.

::

    with open_out_dir("runs/x") as folder:   # DiskError or UserError (held by another process) otherwise
        ...                                  # write into folder

:func:`disk_error` turns the error of a failed write (an ``OSError``, or torch's ``RuntimeError`` for a
full disk) into a :class:`DiskError` naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from annofree.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: the lock falls back to the pid check alone
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".annofree.lock"
# What tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") makes: a dot, the name, 8 random characters.
STALE_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
NEARLY_FULL_BYTES = 1 << 20  # less free space than this after a failed write: the disk filled up

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.EEXIST: "exists and is not a folder",
}


class DiskError(UserError, OSError):
    """A write that failed for a reason of the disk (full, read-only, no permission), named in one line.

    An ``OSError`` too (with ``errno`` and ``filename``), so that callers catching ``OSError`` still catch it.
    """

    def __init__(self, path: str | Path, cause: str, code: int | None = None):
        OSError.__init__(self, code, cause, str(path))
        self.path, self.cause = Path(path), cause

    def __str__(self) -> str:
        return f"{self.path}: cannot write: {self.cause}"


def describe(exc: BaseException) -> str:
    """The cause of an ``OSError`` in words (``no space left on the device``, ``read-only file system``, ...)."""
    code = getattr(exc, "errno", None)
    if code in _CAUSES:
        return _CAUSES[code]
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0] or type(exc).__name__


def disk_error(path: str | Path, exc: BaseException) -> DiskError | None:
    """A :class:`DiskError` for ``exc`` raised while writing ``path``, or None when the disk is not the cause.

    Call it while the failed write's partial file still exists: torch reports a full disk as a
    ``RuntimeError`` ("unexpected pos"), which is recognised by the free space left on the device.
    """
    if isinstance(exc, DiskError):
        return exc
    if isinstance(exc, OSError):
        return DiskError(path, describe(exc), exc.errno)
    if _nearly_full(Path(path).parent):
        return DiskError(path, _CAUSES[errno.ENOSPC], errno.ENOSPC)
    return None


def _nearly_full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail  # root may use the reserved blocks
    return blocks * stats.f_frsize < NEARLY_FULL_BYTES


def check_writable(folder: str | Path, flag: str = "--out") -> Path:
    """Create ``folder`` (and its parents) and prove that a file can be written in it; one-line error otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".annofree-probe.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise DiskError(f"{flag} {folder}", describe(exc), exc.errno) from None
    return folder


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the ``.NAME.XXXXXXXX.tmp`` files of writes that were killed (call it holding the folder's lock)."""
    removed = []
    for path in Path(folder).iterdir():
        if STALE_TEMPORARY.match(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except OSError:  # gone meanwhile, or not ours to remove: leave it
                pass
    return removed


class FolderBusy(UserError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """The lock of one output folder, held by this process until :meth:`release` (or the process ends).

    Taking it again in the same process only counts up: a POSIX lock belongs to the process, and closing any
    other descriptor of the lock file would drop it.
    """

    _held: ClassVar[dict[Path, FolderLock]] = {}

    def __init__(self, folder: Path, fd: int):
        self.folder, self._fd, self._count = folder, fd, 1

    @classmethod
    def acquire(cls, folder: str | Path, command: str | None = None, flag: str = "--out") -> FolderLock:
        """Take the lock of ``folder`` (which must exist); :class:`FolderBusy` naming the holder otherwise."""
        folder = Path(folder).resolve()
        held = cls._held.get(folder)
        if held is not None:
            held._count += 1
            return held
        path = folder / LOCK_NAME
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or _command_line(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        for _ in range(10):  # the holder may remove the file between our open and our lock: open it again
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise DiskError(path, describe(exc), exc.errno) from None
            if not _try_lock(fd, path):
                os.close(fd)
                raise FolderBusy(_busy_message(folder, _read_holder(path), flag))
            try:
                same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:
                os.close(fd)
                continue
            text = json.dumps(info).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
            lock = cls._held[folder] = cls(folder, fd)
            return lock
        raise FolderBusy(f"{folder}: could not take the lock {LOCK_NAME} (it keeps being replaced)")

    def release(self) -> None:
        """Let the folder go (the last release in this process removes the lock file)."""
        self._count -= 1
        if self._count > 0 or self._fd < 0:
            return
        FolderLock._held.pop(self.folder, None)
        with contextlib.suppress(OSError):  # before unlocking: a process that opened the file sees it replaced
            os.unlink(self.folder / LOCK_NAME)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _try_lock(fd: int, path: Path) -> bool:
    """Lock ``fd`` without waiting: True when taken, False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise DiskError(path, describe(exc), exc.errno) from None
    # No record locks here: the holder named in the file counts while its process lives on this host.
    holder = _read_holder(path)
    return not (holder and holder.get("host") == socket.gethostname() and _alive(holder.get("pid")))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _busy_message(folder: Path, holder: dict | None, flag: str) -> str:
    if holder:
        who = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: `{holder.get('command')}`"
    else:
        who = "a process that has not yet said who it is"
    return f"{flag} {folder}: in use by another annofree process ({who}); wait for it to end or choose another {flag}"


def _command_line() -> str:
    """This process's command line as the user typed it (``annofree train ...``, or ``python -m ...``)."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if argv and Path(argv[0]).name.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        argv = argv[2:]  # python -m annofree ... -> annofree ...
    elif len(argv) > 1 and Path(argv[0]).name.startswith("python") and Path(argv[1]).name == "annofree":
        argv = argv[1:]  # python .../bin/annofree ... (a console script run by its interpreter)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def open_out_dir(folder: str | Path, flag: str = "--out", command: str | None = None) -> FolderLock:
    """Make ``folder`` ready for this process to write: created, writable, locked, stale temporaries removed.

    Returns the held lock: release it, or use it as a context manager.
    """
    folder = check_writable(folder, flag)
    held = FolderLock.acquire(folder, command, flag)
    remove_stale_temporaries(folder)
    return held
