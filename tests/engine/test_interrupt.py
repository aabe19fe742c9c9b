"""SIGINT and SIGTERM during `annofree train`: a checkpoint at the next step boundary, the way to continue, the exit
code; a second signal stops at once; the resumed run equals an uninterrupted one bit for bit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from annofree.engine.checkpoint import STATE_NAME, load_state
from annofree.engine.logging import read_log
from annofree.folders import LOCK_NAME
from tests.torchrun import torchrun_command, torchrun_env

from .toy_method import toy_config

TOY_CLI = Path(__file__).with_name("toy_cli.py")
NOISY = {"samples": 24, "forward_noise": 0.3, "data_noise": 0.2}


def _start(config: dict, tmp_path: Path, out: Path) -> subprocess.Popen:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, str(TOY_CLI), "train", "toy", "--config", str(path), "--data", "toy", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_records(process: subprocess.Popen, out: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = out / "log.jsonl"
        if log.exists() and len(read_log(log)) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended early ({process.returncode}): {process.communicate()[1][-3000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("the run logged nothing in time")


def _finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the interrupted run did not stop")
    return process.returncode, stderr


def test_sigint_saves_at_the_next_step_says_how_to_continue_and_the_resume_is_exact(tmp_path: Path) -> None:
    config = toy_config(
        train={"steps": 30, "log_every": 1, "save_every": 0},
        toy={**NOISY, "step_delay": 0.05},
        optim={"clip_grad": 1.0},
    )
    out = tmp_path / "run"
    process = _start(config, tmp_path, out)
    _wait_for_records(process, out, 3)
    process.send_signal(signal.SIGINT)
    code, stderr = _finish(process)

    assert code == 130, stderr
    step = load_state(out)["step"]
    assert 3 <= step < 30
    last_line = stderr.strip().splitlines()[-1]
    assert last_line == (
        f"annofree: stopped by SIGINT: step {step} of 30 saved in {out}; "
        f"continue with `annofree train toy --out {out} --resume`"
    )
    assert "Traceback" not in stderr and not (out / LOCK_NAME).exists()
    assert [r["step"] for r in read_log(out / "log.jsonl")] == list(range(1, step + 1))

    # The command it printed (no --config, no --data) continues the run ...
    resumed = subprocess.run(
        [sys.executable, str(TOY_CLI), "train", "toy", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_state(out)["step"] == 30
    # ... to the weights of an uninterrupted run (in a process like it), bit for bit.
    code, stderr = _finish(_start(config, tmp_path, tmp_path / "whole"))
    assert code == 0, stderr
    whole = load_state(tmp_path / "whole")["method"]
    for name, value in load_state(out)["method"].items():
        assert torch.equal(value, whole[name]), name


def test_sigterm_saves_and_exits_with_143(tmp_path: Path) -> None:
    config = toy_config(train={"steps": 200, "log_every": 1, "save_every": 0}, toy={"step_delay": 0.05})
    out = tmp_path / "run"
    process = _start(config, tmp_path, out)
    _wait_for_records(process, out, 2)
    process.send_signal(signal.SIGTERM)
    code, stderr = _finish(process)
    assert code == 143, stderr
    step = load_state(out)["step"]
    assert re.search(rf"stopped by SIGTERM: step {step} of 200 saved in ", stderr), stderr
    assert 2 <= step < 200


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    # Each step sleeps 5 s: the first signal waits for the step to end, the second (a second later) does not.
    config = toy_config(train={"steps": 20, "log_every": 1, "save_every": 0}, toy={"step_delay": 5.0})
    out = tmp_path / "run"
    process = _start(config, tmp_path, out)
    deadline = time.monotonic() + 120
    while not (out / LOCK_NAME).exists() or not (out / "config.yaml").exists():  # the loop is about to start
        assert time.monotonic() < deadline and process.poll() is None, "the run did not start"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    time.sleep(1.5)
    sent_second = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, stderr = _finish(process)
    assert code == 130, stderr
    assert time.monotonic() - sent_second < 4.0  # not after the 5-s step
    assert "stopped by SIGINT before the first checkpoint: nothing saved in" in stderr, stderr
    assert "Traceback" not in stderr
    assert not (out / STATE_NAME).exists()


def _torchrun(tmp_path: Path, mode: str, **kwargs) -> subprocess.Popen:
    command = torchrun_command(Path(__file__).with_name("signal_worker.py"), 2, tmp_path, mode)
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=torchrun_env(), **kwargs
    )


def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    process = _torchrun(tmp_path, "interrupted")
    _wait_for_records(process, tmp_path / "run", 2, timeout=180)
    rank1 = int((tmp_path / "pid_rank1").read_text())
    os.kill(rank1, signal.SIGTERM)  # rank 1 only: rank 0 learns it at the next step boundary
    code, stderr = _finish(process, timeout=180)
    assert code != 0  # torchrun reports its workers' exit (143)
    state = load_state(tmp_path / "run")
    step = state["step"]
    assert 2 <= step < 40 and state["world_size"] == 2
    for rank in (0, 1):
        assert f"rank {rank}: stopped by SIGTERM: step {step} of 40 saved in {tmp_path / 'run'}" in stderr, stderr
    assert "torchrun ... -m annofree train toy --out" in stderr
    assert not (tmp_path / "run" / LOCK_NAME).exists()

    code, stderr = _finish(_torchrun(tmp_path, "resume"), timeout=300)
    assert code == 0, stderr[-4000:]
    for rank in (0, 1):
        resumed = torch.load(tmp_path / f"resumed_rank{rank}.pt", weights_only=True)
        whole = torch.load(tmp_path / f"whole_rank{rank}.pt", weights_only=True)
        for name, value in whole.items():
            assert torch.equal(resumed[name], value), f"rank {rank}: {name}"
