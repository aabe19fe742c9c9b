"""Backbone export: every backbone tensor under the expected name, equal values, nothing more, in each format."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from annofree import cli
from annofree.errors import UserError
from annofree.interop.backbone import detectron2_name, export_backbone, to_format
from annofree.models.resnet import resnet50
from annofree.weights import load, save_weights
from tests.models.test_resnet import TORCHVISION_RESNET18
from tests.tiny import save_tiny_groupvit, tiny_densesiam

# detectron2's names for torchvision names, as its tools/convert-torchvision-to-d2.py renames them.
DETECTRON2_NAMES = {
    "conv1.weight": "stem.conv1.weight",
    "bn1.weight": "stem.conv1.norm.weight",
    "bn1.num_batches_tracked": "stem.conv1.norm.num_batches_tracked",
    "layer1.0.conv1.weight": "res2.0.conv1.weight",
    "layer1.1.bn2.running_var": "res2.1.conv2.norm.running_var",
    "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
    "layer2.0.downsample.1.running_mean": "res3.0.shortcut.norm.running_mean",
    "layer3.5.bn3.bias": "res4.5.conv3.norm.bias",
    "layer4.2.conv3.weight": "res5.2.conv3.weight",
}
DETECTRON2_PATTERN = re.compile(
    r"stem\.conv1\.(weight|norm\.\w+)|res[2-5]\.\d+\.(conv[1-3]|shortcut)\.(weight|norm\.\w+)"
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    model = tiny_densesiam(seed=2)
    with torch.no_grad():  # BN statistics that differ from their initial values must arrive too
        model.backbone.bn1.running_mean.uniform_()
        model.backbone.layer2[0].downsample[1].running_var.uniform_(1, 2)
    return save_weights(tmp_path_factory.mktemp("ds") / "model.safetensors", model, "densesiam", model.config.to_dict())


def annofree(monkeypatch, *argv) -> int:
    monkeypatch.setattr(cli, "COMMANDS", ["export"])
    return cli.main([str(a) for a in argv])


def _reload(path, fmt):
    if fmt == "detectron2":
        with open(path, "rb") as f:
            obj = pickle.load(f)
        assert obj["__author__"] == "annofree" and obj["matching_heuristics"] is True
        return {k: torch.from_numpy(np.asarray(v)) for k, v in obj["model"].items()}
    obj = torch.load(path, weights_only=True)
    return obj["state_dict"] if fmt == "mmdet" else obj


EXPECTED_NAME = {"torchvision": lambda k: k, "detectron2": detectron2_name, "mmdet": lambda k: "backbone." + k}


@pytest.mark.parametrize("fmt", ["torchvision", "detectron2", "mmdet"])
def test_each_format_carries_every_backbone_tensor(tmp_path, run_dir, monkeypatch, capsys, fmt):
    out = tmp_path / ("r18.pkl" if fmt == "detectron2" else "r18.pth")
    code = annofree(monkeypatch, "export", "backbone", "--weights", run_dir, "--format", fmt, "--out", out)
    assert code == 0, capsys.readouterr().err
    state = load(run_dir).backbone.state_dict()
    exported = _reload(out, fmt)
    assert len(exported) == len(state)
    for name, tensor in state.items():
        torch.testing.assert_close(exported[EXPECTED_NAME[fmt](name)], tensor, rtol=0, atol=0)
    if fmt == "detectron2":
        assert all(DETECTRON2_PATTERN.fullmatch(k) for k in exported)
        assert "MODEL.RESNETS.RES2_OUT_CHANNELS: 64" in capsys.readouterr().out


def test_torchvision_names_equal_torchvision_resnet18(tmp_path) -> None:
    path = export_backbone(tiny_densesiam(), "torchvision", tmp_path / "r18.pth")
    names = list(torch.load(path, weights_only=True))
    assert names == [k for k, _ in TORCHVISION_RESNET18 if not k.startswith("fc.")]


def test_detectron2_renaming_of_a_resnet50() -> None:
    state = resnet50().state_dict()
    renamed = to_format(state, "detectron2")["model"]
    assert len(renamed) == len(state) == 318
    assert all(DETECTRON2_PATTERN.fullmatch(k) for k in renamed)
    for torchvision, detectron2 in DETECTRON2_NAMES.items():
        assert detectron2_name(torchvision) == detectron2
        np.testing.assert_array_equal(renamed[detectron2], state[torchvision].numpy())


def test_errors_are_one_line(tmp_path, run_dir, monkeypatch, capsys) -> None:
    groupvit = save_tiny_groupvit(tmp_path / "gv")
    code = annofree(
        monkeypatch, "export", "backbone", "--weights", groupvit, "--format", "mmdet", "--out", tmp_path / "x.pth"
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "backbone export needs DenseSiam weights, not GroupViT" in err
    argv = ["export", "backbone", "--weights", run_dir, "--format", "detectron2", "--out", tmp_path / "r.pth"]
    assert annofree(monkeypatch, *argv) == 2
    assert ".pkl file name" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown backbone format"):
        to_format({}, "caffe2")
    assert not (tmp_path / "r.pth").exists()
