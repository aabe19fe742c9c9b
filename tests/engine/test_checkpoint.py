"""Checkpoint files: RNG capture/restore, weights_only loading, step bookkeeping, clear errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from annofree.engine import checkpoint
from annofree.engine.checkpoint import Progress, capture_rng, load_state, restore_rng, save_checkpoint, weights_step
from annofree.engine.config import OptimSection, resolve_engine_config
from annofree.engine.optim import WarmupCosine, build_optimizer
from annofree.errors import UserError
from annofree.weights import read_weights

from .toy_method import ToyMethod, toy_config


def _draws() -> tuple:
    return (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random(), random.gauss(0, 1))


def test_rng_states_round_trip_including_cached_gaussians(tmp_path: Path) -> None:
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in python's
    state = capture_rng(torch.device("cpu"))
    torch.save(state, tmp_path / "rng.pt")
    first = _draws()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    again = _draws()
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def _toy_run_parts(config: dict):
    method = ToyMethod(config)
    optimizer = build_optimizer(method, OptimSection.from_dict(config["optim"]), lr=0.1)
    schedule = WarmupCosine(optimizer, lr=0.1, total_steps=10)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return method, optimizer, schedule, scaler


def test_saved_state_loads_with_weights_only_and_records_the_step(tmp_path: Path) -> None:
    config = resolve_engine_config(toy_config())
    method, optimizer, schedule, scaler = _toy_run_parts(config)
    method(next(iter(method.train_batches(_spec()))))["loss_mse"].backward()
    optimizer.step()
    schedule.step()
    progress = Progress(step=7, epoch=2, batches_in_epoch=3, skipped=4, elapsed_s=1.5)
    save_checkpoint(
        tmp_path,
        method=method,
        optimizer=optimizer,
        schedule=schedule,
        scaler=scaler,
        progress=progress,
        device=torch.device("cpu"),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "train_state.pt"]  # no temp files

    state = torch.load(tmp_path / checkpoint.STATE_NAME, weights_only=True)
    assert checkpoint.progress_of(state) == progress
    assert state["world_size"] == 1 and len(state["rng"]) == 1
    assert state["schedule"] == {"steps_taken": 1}
    assert all(torch.equal(state["method"][k], v) for k, v in method.state_dict().items())
    fresh = ToyMethod(config)
    fresh_optimizer = build_optimizer(fresh, OptimSection.from_dict(config["optim"]), lr=0.1)
    fresh_optimizer.load_state_dict(state["optimizer"])  # the optimiser state fits a rebuilt optimiser
    assert fresh_optimizer.state_dict()["state"][0]["step"] == 1

    assert weights_step(tmp_path) == 7
    weights, name, model_config = read_weights(tmp_path)
    assert name == "toy" and model_config == method.model_config() and set(weights) == set(method.net.state_dict())


def _spec():
    from annofree.methods.base import LoaderSpec

    return LoaderSpec(data="toy", batch_size=4)


def test_load_state_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        load_state(tmp_path)
    (tmp_path / checkpoint.STATE_NAME).write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"train_state\.pt: unreadable training state"):
        load_state(tmp_path)
    torch.save({"step": 3}, tmp_path / checkpoint.STATE_NAME)
    with pytest.raises(UserError, match="not an annofree training state"):
        load_state(tmp_path)


def test_weights_step_without_a_readable_file_is_none(tmp_path: Path) -> None:
    assert weights_step(tmp_path) is None
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    assert weights_step(tmp_path) is None


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from annofree.io import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.chmod(tmp_path / "a.txt", 0o640)
        atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("y"))
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    finally:
        os.umask(umask)


def test_the_umask_is_read_without_being_changed(monkeypatch):
    import os
    import sys

    from annofree.io import process_umask

    umask = os.umask(0o027)
    try:
        assert process_umask() == 0o027
        if sys.platform.startswith("linux"):  # read from /proc: the umask is never set, not even for a moment
            monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("os.umask was called"))
            assert process_umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(umask)
