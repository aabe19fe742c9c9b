"""``annofree export onnx`` then ``annofree segment --onnx``: the same files and labels as with ``--weights``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from annofree import cli
from annofree.weights import save_weights
from tests.interop.test_onnx import scene, varied_groupvit
from tests.tiny import save_tiny_densesiam


def annofree(monkeypatch, *argv) -> int:
    monkeypatch.setattr(cli, "COMMANDS", ["export", "segment"])
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = varied_groupvit()
    return save_weights(tmp_path_factory.mktemp("run") / "model.safetensors", model, "groupvit", model.config.to_dict())


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, weights):
    out = tmp_path_factory.mktemp("export") / "onnx"
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert annofree(monkeypatch, "export", "onnx", "--weights", weights, "--out", out) == 0
    return out


def test_export_prints_what_it_wrote(tmp_path, weights, monkeypatch, capsys):
    code = annofree(monkeypatch, "export", "onnx", "--weights", weights, "--out", tmp_path / "o")
    out = capsys.readouterr().out
    assert code == 0
    for name in ("image.onnx", "text.onnx", "onnx_config.json"):
        assert f"wrote {tmp_path / 'o' / name} (" in out
        assert (tmp_path / "o" / name).is_file()
    assert f"--onnx {tmp_path / 'o'}" in out


def test_segment_with_onnx_writes_what_weights_write(tmp_path, weights, onnx_dir, monkeypatch, capsys):
    Image.fromarray(scene()).save(tmp_path / "scene.png")
    options = ["--classes", "cat,dog,grass,sky,road,tree", "--short-side", 0, "--bg-thresh", 0.2, "--mode", "slide"]
    options += ["--window", 32, "--stride", 16]
    for model in (["--weights", weights], ["--onnx", onnx_dir]):
        out = tmp_path / model[0].lstrip("-")
        assert annofree(monkeypatch, "segment", tmp_path / "scene.png", *model, *options, "--out", out) == 0
        assert (out / "scene_overlay.png").is_file()
    capsys.readouterr()
    ours = np.asarray(Image.open(tmp_path / "onnx" / "scene.png"))
    theirs = np.asarray(Image.open(tmp_path / "weights" / "scene.png"))
    assert ours.shape == (64, 96) and len(np.unique(theirs)) >= 2
    assert (ours == theirs).mean() >= 0.999
    summary, reference = (json.loads((tmp_path / kind / "scene.json").read_text()) for kind in ("onnx", "weights"))
    assert summary["classes"] == ["background", "cat", "dog", "grass", "sky", "road", "tree"]
    assert summary["fractions"] == pytest.approx(reference["fractions"])


def _one_line_error(capsys, message):
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("annofree: error:")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("both", "exactly one of --weights"),
        ("neither", "exactly one of --weights"),
        ("missing", "no ONNX export here"),
        ("corrupt", "text.onnx: not a loadable ONNX model"),
    ],
)
def test_segment_model_errors_are_one_line(tmp_path, weights, onnx_dir, monkeypatch, capsys, model, message):
    Image.fromarray(scene(height=16, width=16)).save(tmp_path / "x.png")
    (tmp_path / "corrupt").mkdir()
    for name in ("image.onnx", "onnx_config.json"):
        (tmp_path / "corrupt" / name).write_bytes((onnx_dir / name).read_bytes())
    (tmp_path / "corrupt" / "text.onnx").write_bytes(b"truncated")
    argv = {
        "both": ["--weights", weights, "--onnx", onnx_dir],
        "neither": [],
        "missing": ["--onnx", tmp_path / "nothing"],
        "corrupt": ["--onnx", tmp_path / "corrupt"],
    }[model]
    code = annofree(monkeypatch, "segment", tmp_path / "x.png", *argv, "--classes", "cat", "--out", tmp_path / "out")
    assert code == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "out" / "x.png").exists()


def test_segment_with_onnx_needs_classes(tmp_path, onnx_dir, monkeypatch, capsys):
    Image.fromarray(scene(height=16, width=16)).save(tmp_path / "x.png")
    assert annofree(monkeypatch, "segment", tmp_path / "x.png", "--onnx", onnx_dir, "--out", tmp_path / "out") == 2
    _one_line_error(capsys, "--classes is required")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["onnx", "--weights", "DENSESIAM"], "ONNX export needs GroupViT weights, not DenseSiam"),
        (["onnx", "--weights", "GROUPVIT", "--format", "mmdet"], "--format is for `annofree export backbone`"),
        (["onnx", "--weights", "GROUPVIT", "--opset", 12], "opset 12"),
        (["backbone", "--weights", "DENSESIAM"], "export backbone needs --format"),
    ],
)
def test_export_errors_are_one_line(tmp_path, weights, monkeypatch, capsys, argv, message):
    densesiam = save_tiny_densesiam(tmp_path / "ds")
    argv = [{"DENSESIAM": densesiam, "GROUPVIT": weights}.get(a, a) for a in argv]
    assert annofree(monkeypatch, "export", *argv, "--out", tmp_path / "out") == 2
    _one_line_error(capsys, message)
