"""Output folders: the one-writer lock (held by another process, taken over from a dead one), one-line disk errors
(full, read-only, no permission) and the removal of a killed write's temporary files."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from annofree.errors import UserError
from annofree.folders import (
    LOCK_NAME,
    DiskError,
    FolderBusy,
    FolderLock,
    check_writable,
    disk_error,
    open_out_dir,
    remove_stale_temporaries,
)
from annofree.io import atomic_write

HOLDER = textwrap.dedent(
    """
    import sys, time
    from annofree.folders import FolderLock
    lock = FolderLock.acquire(sys.argv[1], command="annofree segment a.jpg --out x")
    print("held", flush=True)
    time.sleep(600)
    """
)


class HeldByAnotherProcess:
    """A process that holds the lock of ``folder`` until it is stopped (with ``signum``)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()
        assert line == "held\n", self.process.stderr.read()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)
        self.process.wait(timeout=30)


@pytest.fixture
def holder(tmp_path):
    held = HeldByAnotherProcess(tmp_path / "out")
    yield held
    if held.process.poll() is None:
        held.stop()


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path, holder):
    with pytest.raises(FolderBusy) as refused:
        open_out_dir(tmp_path / "out")
    message = str(refused.value)
    assert "\n" not in message
    assert f"pid {holder.process.pid} on {socket.gethostname()} since " in message
    assert "`annofree segment a.jpg --out x`" in message and "choose another --out" in message


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    holder.stop(signal.SIGKILL)  # no chance to clean up: the lock file stays, naming the dead process
    assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["pid"] == holder.process.pid
    with open_out_dir(tmp_path / "out"):
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released: removed


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "command": "annofree train", "since": "then"}
    (folder / LOCK_NAME).write_text(json.dumps(stale))
    lock = FolderLock.acquire(folder)
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_the_same_process_may_take_its_lock_again(tmp_path):
    outer = FolderLock.acquire(tmp_path)
    inner = FolderLock.acquire(tmp_path)
    assert inner is outer
    inner.release()
    assert (tmp_path / LOCK_NAME).exists()  # still held by the outer use
    outer.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    stale = [tmp_path / ".train_state.pt.k2j_x9q1.tmp", tmp_path / ".model.safetensors.abcd1234.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "model.safetensors", tmp_path / "a.png"]
    for path in stale + kept:
        path.write_bytes(b"x" * 10)
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_failed_write_names_the_path_and_the_cause_and_keeps_the_old_file(tmp_path, code, cause):
    target = tmp_path / "model.safetensors"
    target.write_text("the previous weights")

    def failing(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(DiskError) as failed:
        atomic_write(target, failing)
    assert str(failed.value) == f"{target}: cannot write: {cause}"
    assert isinstance(failed.value, UserError) and isinstance(failed.value, OSError)
    assert failed.value.errno == code
    assert target.read_text() == "the previous weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary file left


def test_torch_s_error_for_a_full_disk_becomes_no_space(tmp_path, monkeypatch):
    import annofree.folders as folders

    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    monkeypatch.setattr(folders, "_nearly_full", lambda folder: True)
    assert str(disk_error(tmp_path / "train_state.pt", torch_error)).endswith(
        "cannot write: no space left on the device"
    )
    monkeypatch.setattr(folders, "_nearly_full", lambda folder: False)
    assert disk_error(tmp_path / "train_state.pt", torch_error) is None  # not the disk: the error stays as it was


def test_an_unwritable_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    import annofree.folders as folders

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(folders.tempfile, "mkstemp", read_only)
    with pytest.raises(DiskError, match=r"^--out \S+/out: cannot write: read-only file system$"):
        check_writable(tmp_path / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="exists and is not a folder"):
        check_writable(tmp_path / "file")


# ---- on real file systems: a tiny tmpfs (full) and a read-only one; needs root and mount, skipped otherwise


@pytest.fixture
def mount_point(tmp_path):
    point = tmp_path / "mnt"
    point.mkdir()
    mounted = []

    def mount(options: str) -> Path:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_a_real_full_disk_and_a_real_read_only_disk(mount_point):
    import torch

    full = mount_point("size=256k")
    (full / "filler").write_bytes(b"\0" * 200_000)
    with pytest.raises(DiskError, match=r"train_state\.pt: cannot write: no space left on the device$"):
        atomic_write(full / "train_state.pt", lambda tmp: torch.save({"w": torch.zeros(100_000)}, tmp))
    assert sorted(p.name for p in full.iterdir()) == ["filler"]
    subprocess.run(["umount", str(full)], check=True)
    read_only = mount_point("ro,size=64k")
    with pytest.raises(DiskError, match=r"^--out \S+/mnt/run: cannot write: read-only file system$"):
        check_writable(read_only / "run")
