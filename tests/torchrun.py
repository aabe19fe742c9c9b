"""Launching a test worker under torchrun: ``WORLD`` gloo processes on this machine, one thread each.

::

    done = run_torchrun(WORKER, 2, tmp_path)            # waits; a timeout or a failed worker fails the test
    process = torchrun_command(WORKER, 2, tmp_path, "resume")   # the command line, for a Popen of your own
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the rendezvous port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(worker: Path, world: int, *args: str | Path) -> list[str]:
    """``python -m torch.distributed.run`` for ``world`` processes of ``worker`` with ``args``, on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={world}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(worker),
        *map(str, args),
    ]


def torchrun_env() -> dict[str, str]:
    """The environment of the workers: one thread each, as several processes share a small CPU, and the
    repository on the path, so that a worker script imports ``tests.tiny`` as the tests do."""
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}


def run_torchrun(worker: Path, world: int, *args: str | Path, timeout: float) -> subprocess.CompletedProcess:
    """Run the workers to the end; a timeout or a non-zero exit fails the test with the end of their output."""
    try:
        done = subprocess.run(
            torchrun_command(worker, world, *args), capture_output=True, text=True, timeout=timeout, env=torchrun_env()
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr or ""
        pytest.fail(f"torchrun ({world} processes) timed out after {error.timeout} s\nstderr:\n{stderr[-6000:]}")
    if done.returncode != 0:
        pytest.fail(
            f"torchrun ({world} processes) exited with {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-6000:]}"
        )
    return done
