"""Two gloo processes on halves of a batch give the loss and (DDP-averaged) gradients of one process on all of it."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("_dist_worker.py")
WORLD = 2


def _load_worker():
    spec = importlib.util.spec_from_file_location("_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_workers(out_dir: Path) -> list[dict]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={WORLD}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(WORKER),
        str(out_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share a small CPU
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr or ""
        pytest.fail(f"distributed workers timed out after {error.timeout} s\nstderr:\n{stderr[-6000:]}")
    if done.returncode != 0:
        pytest.fail(
            f"torch.distributed.run exited with {done.returncode}\n"
            f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
        )
    files = sorted(out_dir.glob("rank*.json"))
    assert len(files) == WORLD, f"expected {WORLD} result files, found {[f.name for f in files]}\n{done.stderr[-6000:]}"
    return [json.loads(f.read_text()) for f in files]


def test_two_ranks_match_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    ranks = _run_workers(tmp_path)
    worker = _load_worker()

    model, batch = worker.build_problem()
    for name in worker.LOSS_NAMES:
        model.zero_grad()
        single = worker.compute_losses(model, batch)[name]
        single.backward()
        expected_grads = worker.flat_grads(model)
        for result in ranks:
            got = result["results"][name]
            assert result["world"] == WORLD
            assert got["loss"] == pytest.approx(single.item(), rel=1e-9), f"{name} loss on rank {result['rank']}"
            for param_name, expected in expected_grads.items():
                torch.testing.assert_close(
                    torch.tensor(got["grads"][param_name], dtype=torch.float64),
                    expected,
                    rtol=1e-9,
                    atol=1e-12,
                    msg=lambda m, n=name, p=param_name, r=result["rank"]: f"{n}: grad of {p} on rank {r}: {m}",
                )
        # The halves really differ, so the agreement above is not an accident of symmetric data.
        local_losses = [result["results"][name]["local_loss"] for result in ranks]
        assert local_losses[0] != pytest.approx(local_losses[1], rel=1e-6), name
