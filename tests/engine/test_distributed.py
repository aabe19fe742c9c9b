"""Process set-up in one process, and a real 2-process gloo run under torchrun."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from annofree.engine import distributed
from annofree.engine.checkpoint import load_state
from annofree.engine.logging import read_log
from annofree.engine.trainer import train
from annofree.errors import UserError
from tests.torchrun import run_torchrun

from .toy_method import PLAIN_RUN, ToyMethod, toy_config

WORKER = Path(__file__).with_name("toy_worker.py")
WORLD = 2


def test_single_process_without_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = distributed.setup("cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed) == (0, 1, True, False)
    assert env.device == torch.device("cpu") and not torch.distributed.is_initialized()
    assert distributed.is_main() and distributed.world_size() == 1
    assert distributed.reduce_mean({"a": 1.5, "b": 2.0}) == {"a": 1.5, "b": 2.0}
    assert distributed.reduce_sum({"n": 3.0}) == {"n": 3.0}
    assert distributed.all_true(False) is False and distributed.all_gather_objects({"x": 1}) == [{"x": 1}]
    distributed.barrier()
    distributed.shutdown()  # nothing to destroy: no group was created
    assert not torch.distributed.is_initialized()


def test_device_choice() -> None:
    assert distributed.choose_device("cpu", 0) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert distributed.choose_device("auto", 0) == torch.device("cpu")
        with pytest.raises(UserError, match="CUDA is not available"):
            distributed.choose_device("cuda", 0)


def test_seed_everything_seeds_all_three_rngs() -> None:
    distributed.seed_everything(5)
    first = (torch.rand(2), np.random.rand(2), random.random())
    distributed.seed_everything(5)
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def _states(out: Path, name: str) -> list[dict[str, torch.Tensor]]:
    return [torch.load(out / f"{name}_rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def test_torchrun_two_processes_train_like_one_on_the_whole_batch_and_resume_exactly(tmp_path: Path) -> None:
    run_torchrun(WORKER, WORLD, tmp_path, timeout=180)

    # Both ranks end with the same weights, which moved away from the initial ones ...
    plain = _states(tmp_path, "plain")
    config = toy_config(**PLAIN_RUN)
    distributed.seed_everything(config["seed"])
    initial = ToyMethod(config).state_dict()
    for name, value in plain[0].items():
        assert torch.equal(value, plain[1][name]), name
    assert not torch.equal(plain[0]["net.0.weight"], initial["net.0.weight"])

    # ... and equal those of one process on the two ranks' batches together (2 ranks x 2 x accum 2 = 8).
    single = train(
        toy_config(**{**PLAIN_RUN, "optim": {"accum_steps": 1}, "train": {**PLAIN_RUN["train"], "batch_size": 8}}),
        tmp_path / "single",
        data="toy",
    )
    for name, value in single.method.state_dict().items():
        torch.testing.assert_close(plain[0][name], value, msg=lambda m, n=name: f"{n}: {m}")
    # Logged losses are averaged over ranks, so they match the single process too.
    ddp_log, single_log = read_log(tmp_path / "plain" / "log.jsonl"), read_log(tmp_path / "single" / "log.jsonl")
    assert [r["step"] for r in ddp_log] == [1, 2, 3, 4]
    assert [r["loss"] for r in ddp_log] == pytest.approx([r["loss"] for r in single_log], rel=1e-5)

    # With per-rank randomness, a crashed and resumed 2-process run equals the uninterrupted one, bit for bit.
    noisy, resumed = _states(tmp_path, "noisy"), _states(tmp_path, "resumed")
    for rank in range(WORLD):
        for name, value in noisy[0].items():
            assert torch.equal(value, noisy[rank][name]), f"rank {rank}: {name}"
            assert torch.equal(value, resumed[rank][name]), f"rank {rank}: {name} after resume"
    state = load_state(tmp_path / "resumed")
    assert state["world_size"] == WORLD and len(state["rng"]) == WORLD
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # each rank kept its own stream
