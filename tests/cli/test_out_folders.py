"""Every command that writes a folder refuses a second writer (naming the holder) and an unwritable folder, in
one line, before its work; the folder is free again after the command."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from PIL import Image

from annofree import cli
from annofree.folders import LOCK_NAME
from tests.test_folders import HeldByAnotherProcess
from tests.tiny import save_tiny_groupvit, write_noise_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    weights = save_tiny_groupvit(root / "run")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "a.png")
    data = write_noise_folder(root / "data", ["background", "cat"])
    return {"weights": weights.parent, "image": root / "a.png", "data": data}


COMMANDS = {
    "segment": lambda i, out: ["segment", i["image"], "--weights", i["weights"], "--classes", "cat", "--out", out],
    "evaluate": lambda i, out: ["evaluate", "--weights", i["weights"], "--data", i["data"], "--save-predictions", out],
    "synth": lambda i, out: ["synth", "scenes", out, "--train", "2", "--val", "0"],
    "export onnx": lambda i, out: ["export", "onnx", "--weights", i["weights"], "--out", out],
    "convert --to hf": lambda i, out: ["convert", "--from", "annofree", "--to", "hf", i["weights"], "--out", out],
    "demo": lambda i, out: ["demo", "--method", "groupvit", "--out", out],
    "data shards": lambda i, out: ["data", "shards", i["data"], out, "--no-progress"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_second_writer_is_refused_naming_the_holder(command, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    holder = HeldByAnotherProcess(out)
    try:
        code = cli.main([str(word) for word in COMMANDS[command](inputs, out)])
    finally:
        holder.stop()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("annofree: error: ") and err.count("\n") == 1, err
    assert f"in use by another annofree process (pid {holder.process.pid} on " in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the holder's: nothing written beside it


@pytest.mark.parametrize("command", ["segment", "synth", "convert --to hf"])
def test_an_unwritable_folder_is_one_line_and_the_lock_goes_with_the_command(
    command, inputs, tmp_path, capsys, monkeypatch
):
    import annofree.folders as folders

    real_mkstemp = folders.tempfile.mkstemp

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    out = tmp_path / "out"
    monkeypatch.setattr(folders.tempfile, "mkstemp", read_only)
    assert cli.main([str(word) for word in COMMANDS[command](inputs, out)]) == 2
    assert capsys.readouterr().err.endswith(f"--out {out}: cannot write: read-only file system\n")
    monkeypatch.setattr(folders.tempfile, "mkstemp", real_mkstemp)
    assert cli.main([str(word) for word in COMMANDS[command](inputs, out)]) == 0
    assert not (out / LOCK_NAME).exists() and any(out.iterdir())
