"""Run logs: JSON lines flushed as they are written, resumed logs without the lost steps, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annofree.engine.logging import LOG_NAME, RunLogger, read_log

from .toy_method import toy_config


def test_records_are_flushed_immediately_and_nan_is_kept(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path, total_steps=4)
    logger.log({"step": 1, "loss": 0.5, "lr": 0.1})
    logger.log({"step": 2, "loss": float("nan"), "lr": 0.1})
    lines = (tmp_path / LOG_NAME).read_text().splitlines()  # before close: already on disk
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 0.5, "lr": 0.1},
        {"step": 2, "loss": "nan", "lr": 0.1},
    ]
    logger.close()


def test_a_resumed_log_drops_records_after_the_checkpoint(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path, total_steps=6)
    for step in range(1, 6):
        logger.log({"step": step, "loss": float(step)})
    logger.close()
    with (tmp_path / LOG_NAME).open("a") as f:
        f.write('{"step": 6, "lo')  # a line torn by a crash
    resumed = RunLogger(tmp_path, total_steps=6, start_step=3)
    resumed.log({"step": 4, "loss": 40.0})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_log(tmp_path / LOG_NAME)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path / "run", total_steps=2, enabled=False, tensorboard=True)
    logger.log({"step": 1, "loss": 1.0})
    logger.message("hidden")
    logger.close()
    assert not (tmp_path / "run").exists()


def test_tensorboard_event_files_hold_the_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from annofree.engine.trainer import train

    train(toy_config(train={"steps": 4, "log_every": 2, "tensorboard": True}), tmp_path / "run", data="toy")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "train/loss_mse", "train/images_per_s"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    logged = [r["loss"] for r in read_log(tmp_path / "run" / LOG_NAME)]
    # TensorBoard keeps float32: the same values as log.jsonl to float32 precision.
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)
