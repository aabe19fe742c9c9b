"""The training loop on the toy method: exact resume, accumulation, precision, files, hooks and errors."""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from annofree.engine.checkpoint import STATE_NAME, load_state
from annofree.engine.logging import read_log
from annofree.engine.trainer import lockstep, objective, to_device, train
from annofree.errors import UserError
from annofree.weights import read_weights

from .toy_method import ToyMethod, toy_config


def _state(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _initial_state(config: dict) -> dict[str, torch.Tensor]:
    """The toy's weights before training: the engine builds the method right after seeding with `seed`."""
    from annofree.engine.distributed import seed_everything

    seed_everything(config["seed"])
    return _state(ToyMethod(config))


def test_resume_after_a_crash_is_bit_identical(tmp_path: Path) -> None:
    # Randomness in forward (torch, numpy, python RNGs) and in the data, accumulation over 2 micro-batches,
    # and 5 micro-batches per epoch so that steps straddle epoch boundaries.
    sections = {
        "optim": {"accum_steps": 2, "clip_grad": 1.0},
        "train": {"steps": 8, "save_every": 4, "log_every": 1},
        "toy": {"samples": 20, "forward_noise": 0.3, "data_noise": 0.2},
    }
    straight = train(toy_config(**sections), tmp_path / "straight", data="toy")
    assert straight.step == 8 and straight.epoch == 3

    crashing = toy_config(**{**sections, "toy": {**sections["toy"], "crash_at": 6}})
    with pytest.raises(RuntimeError, match="toy crash before step 6"):
        train(crashing, tmp_path / "resumed", data="toy")
    assert load_state(tmp_path / "resumed")["step"] == 4  # the checkpoint before the crash

    resumed = train(toy_config(**sections), tmp_path / "resumed", data="toy", resume=True)
    assert resumed.step == 8
    # It restarted at step 4 in the middle of epoch 1 (after 3 of its 5 micro-batches).
    assert resumed.method.on_step_calls[0] == (4, 8)
    first = resumed.method.specs[0]
    assert (first.epoch, first.skip_batches) == (1, 3)

    straight_state, resumed_state = _state(straight.method), _state(resumed.method)
    assert straight_state.keys() == resumed_state.keys()
    for name, value in straight_state.items():
        assert torch.equal(value, resumed_state[name]), name
    assert not torch.equal(straight_state["net.0.weight"], _initial_state(toy_config(**sections))["net.0.weight"])

    # The weights files agree too, and the resumed log reads like one uninterrupted run.
    straight_weights, _, _ = read_weights(tmp_path / "straight")
    resumed_weights, _, _ = read_weights(tmp_path / "resumed")
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)
    straight_log = read_log(tmp_path / "straight" / "log.jsonl")
    resumed_log = read_log(tmp_path / "resumed" / "log.jsonl")
    assert [r["step"] for r in resumed_log] == list(range(1, 9))
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in straight_log]


def test_resume_without_a_checkpoint_and_restart_over_a_run_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        train(toy_config(), tmp_path / "empty", data="toy", resume=True)
    train(toy_config(train={"steps": 2}), tmp_path / "run", data="toy")
    with pytest.raises(UserError, match="already holds a training run"):
        train(toy_config(train={"steps": 2}), tmp_path / "run", data="toy")
    with pytest.raises(UserError, match=r"checkpoint is at step 2, beyond train\.steps=1"):
        train(toy_config(train={"steps": 1}), tmp_path / "run", data="toy", resume=True)
    # Resuming a finished run trains nothing and leaves its files as they are.
    before = (tmp_path / "run" / "model.safetensors").stat().st_mtime_ns
    finished = train(toy_config(train={"steps": 2}), tmp_path / "run", data="toy", resume=True)
    assert finished.step == 2 and finished.method.on_step_calls == []
    assert (tmp_path / "run" / "model.safetensors").stat().st_mtime_ns == before


def test_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    accumulated = train(
        toy_config(optim={"accum_steps": 2, "clip_grad": 0.5}, train={"steps": 4, "batch_size": 4}),
        tmp_path / "accum",
        data="toy",
    )
    big = train(
        toy_config(optim={"accum_steps": 1, "clip_grad": 0.5}, train={"steps": 4, "batch_size": 8}),
        tmp_path / "big",
        data="toy",
    )
    initial = _initial_state(toy_config())
    for name, value in _state(big.method).items():
        torch.testing.assert_close(_state(accumulated.method)[name], value, msg=lambda m, n=name: f"{n}: {m}")
        if value.is_floating_point() and name != "net.1.bias":
            assert not torch.equal(value, initial[name]), f"{name} did not train"
    # Same global batch, same logged throughput basis and learning rates.
    assert [r["lr"] for r in read_log(tmp_path / "accum" / "log.jsonl")] == [
        r["lr"] for r in read_log(tmp_path / "big" / "log.jsonl")
    ]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_under_autocast(tmp_path: Path, precision: str) -> None:
    config = toy_config(train={"steps": 3, "precision": precision, "log_every": 1})
    result = train(config, tmp_path / precision, data="toy")
    assert result.method.pred_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    records = read_log(tmp_path / precision / "log.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(isinstance(r["loss"], float) and r["loss"] == r["loss"] for r in records)
    assert not torch.equal(result.method.net[0].weight, _initial_state(config)["net.0.weight"])
    if precision == "fp16":
        assert load_state(tmp_path / precision)["scaler"]["scale"] > 0  # the gradient scaler's state is saved


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_device_and_the_first_line_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], native: bool
) -> None:
    import annofree.precision

    reason = "a test CPU with bf16" if native else "a test CPU without bf16"
    monkeypatch.setattr(annofree.precision, "native_bf16", lambda device: (native, reason))
    config = toy_config(train={"steps": 2, "precision": "auto"})
    result = train(config, tmp_path / "run", data="toy")
    assert result.method.pred_dtype == (torch.bfloat16 if native else torch.float32)
    first_line = capsys.readouterr().out.strip().splitlines()[0]
    assert f"precision auto -> {'bf16' if native else 'fp32'} ({reason})" in first_line


def test_run_directory_files_exist_and_load(tmp_path: Path) -> None:
    config = toy_config(train={"steps": 5, "log_every": 2, "save_every": 2}, toy={"corrupt_every": 5})
    out = tmp_path / "run"
    result = train(config, out, data="toy")

    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml", "curves.png", "log.jsonl", "model.safetensors", STATE_NAME,
    ]  # fmt: skip
    weights, method_name, model_config = read_weights(out)
    assert method_name == "toy" and model_config == {"in": 4, "hidden": 8, "out": 2}
    assert weights.keys() == result.method.net.state_dict().keys()  # deployable part only
    assert all(torch.equal(weights[k], v) for k, v in result.method.net.state_dict().items())

    state = torch.load(out / STATE_NAME, weights_only=True)
    assert state["step"] == 5 and "log_scale" in state["method"]  # full method state, loss parameter included
    assert {"optimizer", "schedule", "scaler", "rng", "epoch", "batches_in_epoch"} <= state.keys()

    from annofree.engine.config import load_config

    saved = load_config(out / "config.yaml", defaults=None)
    assert saved["optim"]["lr"] == 0.05 and saved["train"]["steps"] == 5 and saved["toy"] == {"corrupt_every": 5}

    records = read_log(out / "log.jsonl")
    assert [r["step"] for r in records] == [2, 4, 5]  # every log_every steps and the last one
    for record in records:
        assert {"step", "epoch", "lr", "loss", "loss_mse", "loss_reg", "mae", "grad_norm", "images_per_s"} <= set(
            record
        )
        assert record["elapsed_s"] > 0 and record["images_per_s"] > 0
    # The losses are summed into `loss`; metrics are logged but not optimised.
    assert records[-1]["loss"] == pytest.approx(records[-1]["loss_mse"] + records[-1]["loss_reg"], rel=1e-6)
    assert result.metrics == records[-1]
    # 5 steps x 4 samples of the 64-sample epoch: count the toy's corrupt-marked samples it really saw.
    order = torch.randperm(64, generator=torch.Generator().manual_seed(config["seed"] * 1000))
    assert records[-1]["skipped"] == int((order[:20] % 5 == 0).sum()) > 0


def test_on_step_runs_once_before_each_step(tmp_path: Path) -> None:
    result = train(toy_config(optim={"accum_steps": 3}, train={"steps": 4}), tmp_path / "run", data="toy")
    assert result.method.on_step_calls == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_an_epoch_without_batches_stops_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no training data: toy yielded no batch for epoch 0 from '\S*/nowhere'"):
        train(toy_config(toy={"samples": 3}), tmp_path / "run", data="nowhere")


def test_a_nan_loss_stops_the_run(tmp_path: Path) -> None:
    config = toy_config(train={"steps": 6, "log_every": 1, "save_every": 2}, toy={"nan_from": 3})
    with pytest.raises(UserError, match=r"loss_mse is nan at step 4; the last checkpoint .* is at step 2"):
        train(config, tmp_path / "run", data="toy")
    assert load_state(tmp_path / "run")["step"] == 2  # the NaN step was not saved


def test_method_outputs_must_hold_a_loss() -> None:
    assert objective({"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(2.0), "acc": torch.tensor(9.0)}, "m") == 3.0
    with pytest.raises(ValueError, match="no entry named loss"):
        objective({"acc": torch.tensor(1.0)}, "m")
    with pytest.raises(TypeError, match="must return a dict"):
        objective(torch.tensor(1.0), "m")


@dataclass
class _Pair:
    left: torch.Tensor
    right: list


def test_to_device_reaches_tensors_in_every_container() -> None:
    Point = namedtuple("Point", "x y")
    batch = {
        "a": [torch.ones(1), (torch.zeros(2), "text")],
        "b": Point(torch.ones(1), 3),
        "c": _Pair(torch.ones(1), [torch.ones(1)]),
    }
    moved = to_device(batch, torch.device("meta"))
    assert moved["a"][0].is_meta and moved["a"][1][0].is_meta and moved["a"][1][1] == "text"
    assert isinstance(moved["b"], Point) and moved["b"].x.is_meta and moved["b"].y == 3
    assert isinstance(moved["c"], _Pair) and moved["c"].left.is_meta and moved["c"].right[0].is_meta
    assert batch["a"][0].device.type == "cpu"  # the input is not modified


def test_lockstep_in_one_process_passes_batches_through() -> None:
    assert list(lockstep(iter([1, 2, 3]))) == [1, 2, 3]
    assert list(lockstep([])) == []


def test_log_records_are_json_lines(tmp_path: Path) -> None:
    train(toy_config(train={"steps": 2, "log_every": 1}), tmp_path / "run", data="toy")
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)


def test_init_weights_starts_from_trained_weights(tmp_path: Path) -> None:
    first = train(toy_config(), tmp_path / "first", data="toy")
    # lr 0 after warm-up from 0: the second run's weights stay exactly those it started from.
    frozen = {"lr": 1e-12, "warmup_steps": 0, "warmup_lr": 0.0, "min_lr": 0.0, "weight_decay": 0.0}
    second = train(
        toy_config(optim=frozen, train={"steps": 2, "init_weights": str(tmp_path / "first")}),
        tmp_path / "second",
        data="toy",
    )
    for name, value in first.method.net.state_dict().items():
        torch.testing.assert_close(second.method.net.state_dict()[name], value, rtol=0, atol=1e-9)


def test_init_weights_that_do_not_fit_are_a_clear_error(tmp_path: Path) -> None:
    from annofree.weights import save_weights

    bad = tmp_path / "other.safetensors"
    save_weights(bad, torch.nn.Linear(2, 2), "toy", {})
    with pytest.raises(UserError, match="do not fit"):
        train(toy_config(train={"init_weights": str(bad)}), tmp_path / "b", data="toy")
    with pytest.raises(UserError, match="no weights file"):
        train(toy_config(train={"init_weights": str(tmp_path / "missing")}), tmp_path / "c", data="toy")
