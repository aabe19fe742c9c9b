"""`annofree train`: argument parsing (overrides anywhere), method/config agreement, a run and its resume."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest
import yaml

from annofree.cli import main
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


def test_auto_resume_starts_a_new_run_and_continues_a_saved_one(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    path = _config_file(tmp_path)
    # The one command a launcher repeats: a fresh start the first time ...
    argv = ["train", "toy", "--config", str(path), "--data", "toy", "--out", str(out), "--auto-resume"]
    assert main([*argv, "train.steps=2"]) == 0
    assert load_state(out)["step"] == 2 and "resuming" not in capsys.readouterr().out
    # ... a resume from the checkpoint afterwards, with or without --config.
    assert main([*argv, "train.steps=4"]) == 0
    assert load_state(out)["step"] == 4 and "resuming from step 2" in capsys.readouterr().out
    assert main(["train", "toy", "--out", str(out), "--auto-resume", "train.steps=5"]) == 0
    assert load_state(out)["step"] == 5
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [2, 4, 5]
    # Without a saved run it needs a config like any fresh start, and it creates nothing.
    with pytest.raises(UserError, match=r"--config is required \(except with --resume, or --auto-resume on a saved"):
        train_cli.resolve_config(_parse(["train", "toy", "--out", str(tmp_path / "none"), "--auto-resume"]))
    assert not (tmp_path / "none").exists()
    with pytest.raises(SystemExit):
        _parse(["train", "toy", "--out", "o", "--resume", "--auto-resume"])  # one or the other


def test_auto_resume_refuses_ranks_that_see_different_run_folders(tmp_path: Path, monkeypatch) -> None:
    from annofree.engine import distributed, trainer

    out = tmp_path / "run"
    trainer.train(toy_config(train={"steps": 2, "save_every": 0}), out, data="toy")
    with pytest.raises(ValueError, match="resume must be True, False or 'auto'"):
        trainer.train(toy_config(), out, data="toy", resume="yes")
    # What rank 0 learns when another node's --out is a folder of its own without the checkpoint.
    monkeypatch.setattr(distributed, "all_gather_objects", lambda resume: [resume, not resume])
    with pytest.raises(UserError, match=r"rank\(s\) 1 find no training state there but others do; put --out on a"):
        trainer.train(toy_config(train={"steps": 4}), out, data="toy", resume="auto")
    assert load_state(out)["step"] == 2


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resume_needs_only_the_run_folder(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    path = _config_file(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["train", "toy", "--config", str(path), "--data", "data", "--out", str(out), "train.steps=2"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["data"] == str(tmp_path / "data")  # absolute
    monkeypatch.chdir(tmp_path / "data")  # from anywhere
    assert main(["train", "toy", "--out", str(out), "--resume", "train.steps=4"]) == 0
    assert load_state(out)["step"] == 4


def test_a_refused_resume_changes_nothing_on_disk(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    path = _config_file(tmp_path)
    assert main(["train", "toy", "--config", str(path), "--data", "toy", "--out", str(out), "train.steps=2"]) == 0
    before = _snapshot(out)
    # Refused after the set-up (its data yields no batch), with a config that differs from the saved one.
    code = main(["train", "toy", "--out", str(out), "--resume", "train.steps=100", "+toy.samples=3"])
    assert code == 2 and "no training data" in capsys.readouterr().err
    # Refused before: the checkpoint is beyond the steps asked.
    assert main(["train", "toy", "--out", str(out), "--resume", "train.steps=1"]) == 2
    assert _snapshot(out) == before
    # A finished run resumed as it is: nothing to do, nothing written.
    assert main(["train", "toy", "--out", str(out), "--resume"]) == 0
    assert "already at step 2 of 2: nothing to train" in capsys.readouterr().out
    assert _snapshot(out) == before
    # --resume where there is no run creates nothing.
    assert main(["train", "toy", "--config", str(path), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert not (tmp_path / "none").exists()


def test_stale_temporaries_of_a_killed_write_are_removed_at_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = _config_file(tmp_path)
    assert main(["train", "toy", "--config", str(path), "--data", "toy", "--out", str(out), "train.steps=2"]) == 0
    stale = [out / ".train_state.pt.q7w2e9r1.tmp", out / ".model.safetensors.zz00aa11.tmp"]
    for leftover in stale:
        leftover.write_bytes(b"\0" * 1000)  # what kill -9 during a checkpoint write leaves
    assert main(["train", "toy", "--out", str(out), "--resume", "train.steps=3"]) == 0
    assert not any(p.exists() for p in stale) and load_state(out)["step"] == 3


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_previous_checkpoint_resumes(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import torch

    import annofree.folders as folders
    from annofree.engine import checkpoint

    out = tmp_path / "run"
    path = _config_file(tmp_path)
    real_save, saves = torch.save, []

    def save_until_the_disk_fills(obj, target, *args, **kwargs):
        saves.append(target)
        if len(saves) == 2:  # torch's own words for a full disk, from the second checkpoint on
            Path(target).write_bytes(b"\0" * 100)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 784")
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_fills)
    monkeypatch.setattr(folders, "_nearly_full", lambda folder: True)
    argv = ["train", "toy", "--config", str(path), "--data", "toy", "--out", str(out), "train.save_every=2"]
    assert main([*argv, "train.steps=6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err == f"annofree: error: {out / 'train_state.pt'}: cannot write: no space left on the device"
    assert load_state(out)["step"] == 2  # the previous checkpoint is whole
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert main(["train", "toy", "--out", str(out), "--resume", "train.steps=6"]) == 0
    assert load_state(out)["step"] == 6


def test_an_unwritable_run_folder_is_refused_before_the_set_up(tmp_path: Path, monkeypatch, capsys) -> None:
    import annofree.folders as folders
    from annofree.engine import trainer

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def no_set_up(*args, **kwargs):
        raise AssertionError("the set-up started")

    monkeypatch.setattr(folders.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(trainer, "_Run", no_set_up)
    path = _config_file(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "toy", "--config", str(path), "--data", "toy", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"annofree: error: --out {out}: cannot write: read-only file system\n"


def test_a_second_training_into_the_same_folder_is_refused(tmp_path: Path, capsys) -> None:
    from tests.test_folders import HeldByAnotherProcess

    holder = HeldByAnotherProcess(tmp_path / "run")
    try:
        path = _config_file(tmp_path)
        assert main(["train", "toy", "--config", str(path), "--data", "toy", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert f"in use by another annofree process (pid {holder.process.pid} on " in err and err.count("\n") == 1
        assert not (tmp_path / "run" / "config.yaml").exists()
    finally:
        holder.stop()


def test_configs_by_name_and_the_list_when_not_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside the repository: no configs/ here
    for name in ("groupvit/synth_tiny", "groupvit/synth_tiny.yaml", "configs/groupvit/synth_tiny.yaml"):
        config = train_cli.resolve_config(_parse(["train", "groupvit", "--config", name, "--out", "o"]))
        assert config["model"]["image"]["img_size"] == 64 and config["train"]["steps"] == 800, name
    with pytest.raises(UserError) as missing:
        train_cli.resolve_config(_parse(["train", "groupvit", "--config", "groupvit/tiny", "--out", "o"]))
    assert "groupvit/tiny: config file not found (packaged configs: " in str(missing.value)
    assert "groupvit/synth_tiny" in str(missing.value) and "densesiam/demo" in str(missing.value)


def test_relative_paths_in_configs_are_relative_to_the_file_that_sets_them(tmp_path: Path, monkeypatch) -> None:
    from annofree.engine.config import packaged_configs_dir

    repository = Path(__file__).parents[2]
    monkeypatch.chdir(repository)  # the command, from the clone
    config = train_cli.resolve_config(
        _parse(["train", "groupvit", "--config", "configs/groupvit/demo.yaml", "--out", "o"])
    )
    packaged = (packaged_configs_dir() / "../demo/weights/groupvit").resolve()
    assert config["train"]["init_weights"] == str(packaged) and (packaged / "model.safetensors").is_file()

    (tmp_path / "recipes" / "base").mkdir(parents=True)
    (tmp_path / "recipes" / "base" / "b.yaml").write_text("train: {init_weights: w/model.safetensors}\n")
    (tmp_path / "recipes" / "c.yaml").write_text(
        "_base_: base/b.yaml\nmethod: toy\ntrain: {steps: 2, data: 'shards/{000..001}.tar,more'}\n"
    )
    monkeypatch.chdir(tmp_path)
    config = train_cli.resolve_config(_parse(["train", "toy", "--config", "recipes/c.yaml", "--out", "o"]))
    assert config["train"]["init_weights"] == str(tmp_path / "recipes" / "base" / "w" / "model.safetensors")
    assert config["train"]["data"] == f"{tmp_path}/recipes/shards/{{000..001}}.tar,{tmp_path}/recipes/more"
    # On the command line a path is relative to the working directory; a pretrained name stays a name.
    argv = ["train", "toy", "--config", "recipes/c.yaml", "--out", "o", "train.init_weights=groupvit-gcc-yfcc"]
    assert train_cli.resolve_config(_parse([*argv, "train.data=d"]))["train"]["data"] == str(tmp_path / "d")
    assert train_cli.resolve_config(_parse(argv))["train"]["init_weights"] == "groupvit-gcc-yfcc"


def test_train_help_lists_methods_and_packaged_configs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Methods: densesiam, groupvit." in text
    assert "groupvit/synth_tiny" in text and "densesiam/synth_tiny" in text
