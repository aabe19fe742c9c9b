"""`annofree train`: argument parsing (overrides anywhere), method/config agreement, a run and its resume."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from annofree.cli import train as train_cli
from annofree.engine.checkpoint import load_state
from annofree.engine.logging import read_log
from annofree.errors import UserError

from .toy_method import toy_config


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="annofree")
    sub = parser.add_subparsers(dest="command", required=True)
    train_cli.add_parser(sub).set_defaults(_run=train_cli.run)
    return parser.parse_args(argv)


def _config_file(tmp_path: Path, **changes) -> Path:
    config = toy_config()
    config.update(changes)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_overrides_are_collected_before_and_after_the_options(tmp_path: Path) -> None:
    args = _parse(["train", "toy", "optim.lr=1e-3", "--config", "c.yaml", "--out", "runs/x", "+a.b=1", "train.steps=3"])
    assert args.method == "toy" and args.config == Path("c.yaml") and args.out == Path("runs/x")
    assert args.overrides == ["optim.lr=1e-3", "+a.b=1", "train.steps=3"] and not args.resume
    args = _parse(["train", "toy", "--out", "o", "--resume", "--data", "shards/{000..009}.tar"])
    assert args.resume and args.data == "shards/{000..009}.tar" and args.overrides == [] and args.config is None
    with pytest.raises(SystemExit):
        _parse(["train", "toy", "--out", "o", "--bogus"])
    with pytest.raises(SystemExit):
        _parse(["train", "toy", "--config", "c.yaml"])  # --out is required


def test_method_must_match_the_config_or_fill_it_in(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    with pytest.raises(UserError, match="method 'groupvit' does not match the config's method 'toy'"):
        train_cli.resolve_config(_parse(["train", "groupvit", "--config", str(path), "--out", "o"]))
    nameless = _config_file(tmp_path, method=None)
    config = train_cli.resolve_config(
        _parse(["train", "toy", "--config", str(nameless), "--out", "o", "optim.lr=2e-3"])
    )
    assert config["method"] == "toy" and config["optim"]["lr"] == 2e-3
    with pytest.raises(UserError, match="--config is required"):
        train_cli.resolve_config(_parse(["train", "toy", "--out", str(tmp_path / "none")]))
    with pytest.raises(UserError, match=r"no config\.yaml to resume from"):
        train_cli.resolve_config(_parse(["train", "toy", "--out", str(tmp_path / "none"), "--resume"]))


def test_train_then_resume_with_the_saved_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = _config_file(tmp_path)
    args = _parse(["train", "toy", "--config", str(path), "--data", "toy", "--out", str(out), "train.steps=2"])
    assert args._run(args) == 0
    assert load_state(out)["step"] == 2
    # Continue the same run for longer: its config.yaml is used, with the new step count on top.
    args = _parse(["train", "toy", "--data", "toy", "--out", str(out), "--resume", "train.steps=4"])
    assert args._run(args) == 0
    assert load_state(out)["step"] == 4
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [2, 4]
