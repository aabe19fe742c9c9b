"""Two gloo processes on halves of a batch give the loss and (DDP-averaged) gradients of one process on all of it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.torchrun import run_torchrun

WORKER = Path(__file__).with_name("_dist_worker.py")
WORLD = 2


def _load_worker():
    spec = importlib.util.spec_from_file_location("_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_workers(out_dir: Path) -> list[dict]:
    done = run_torchrun(WORKER, WORLD, out_dir, timeout=120)
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
