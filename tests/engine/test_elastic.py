"""An elastic restart under torchrun: a worker killed mid-run, the job restarted by ``--max-restarts`` with the
same command, and ``--auto-resume`` continuing from the last checkpoint to the weights of an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from annofree.engine import distributed
from annofree.engine.checkpoint import load_state
from annofree.engine.logging import read_log
from tests.tiny import assert_same_weights
from tests.torchrun import free_port, torchrun_env

from .toy_method import NOISY_RUN, toy_config

TOY_CLI = Path(__file__).with_name("toy_cli.py")


def _torchrun(config: dict, tmp_path: Path, out: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--max-restarts=1"),
        *("--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--monitor-interval=0.2"),
        *(str(TOY_CLI), "train", "toy", "--config", str(path), "--data", "toy", "--out", str(out), "--auto-resume"),
    ]
    # Two processes share a small CPU; a fresh rendezvous store per attempt (see distributed.launch_warnings).
    env = {**torchrun_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun timed out after {error.timeout} s\n{(error.stderr or '')[-4000:]}")
    assert done.returncode == 0, f"torchrun exited with {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def test_a_killed_worker_is_restarted_by_torchrun_and_auto_resume_ends_on_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    config = toy_config(**{**NOISY_RUN, "train": {**NOISY_RUN["train"], "steps": 12}})
    straight = _torchrun(config, tmp_path, tmp_path / "straight")
    assert "exitcode" not in straight.stderr and "resuming" not in straight.stdout + straight.stderr

    # Rank 1 dies by SIGKILL before step 7 (checkpoint at step 4); torchrun restarts both workers once.
    killed = _torchrun(toy_config(**{**config, "toy": {**config["toy"], "kill_at": 7, "kill_rank": 1}}), tmp_path,
                       tmp_path / "killed")  # fmt: skip
    assert "exitcode: -9" in killed.stderr, killed.stderr[-3000:]  # torchrun saw the SIGKILL and restarted
    assert "resuming from step 4" in killed.stdout + killed.stderr
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in killed.stdout + killed.stderr

    assert_same_weights(tmp_path / "straight", tmp_path / "killed")
    assert load_state(tmp_path / "killed")["step"] == 12
    # The log reads as one run: the records of steps 5 and 6 from the killed attempt were dropped and redone.
    assert [r["step"] for r in read_log(tmp_path / "killed" / "log.jsonl")] == list(range(1, 13))


def test_a_restartable_launch_on_the_shared_store_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    (warning,) = distributed.launch_warnings()
    assert "--max-restarts 3" in warning and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in warning
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # what the variable makes torchrun export
    assert distributed.launch_warnings() == []
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")  # no restart, no stale keys
    assert distributed.launch_warnings() == []
