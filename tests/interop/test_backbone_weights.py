"""model.backbone_weights: a torchvision ResNet-18 state dict file starts DenseSiam's backbone; files that do not
fit, and pickles that would run code, are one-line errors."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import save_file

from annofree.engine.config import load_config
from annofree.errors import UserError
from annofree.interop.backbone import load_backbone_weights
from annofree.methods.densesiam import DenseSiamMethod
from annofree.models.resnet import resnet18

TINY_MODEL = {"dense_dim": 6, "aux_dim": 0, "fpn_channels": 16, "dense_hidden": 16, "dense_pred_hidden": 8,
              "region_dim": 8}  # fmt: skip


def torchvision_resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision's resnet18 state_dict names and shapes, written out here (torchvision is not imported)."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_ch = 64
    for layer, out_ch in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = (out_ch, in_ch if block == 0 else out_ch, 3, 3)
            bn(f"{p}.bn1", out_ch)
            shapes[f"{p}.conv2.weight"] = (out_ch, out_ch, 3, 3)
            bn(f"{p}.bn2", out_ch)
            if block == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (out_ch, in_ch, 1, 1)
                bn(f"{p}.downsample.1", out_ch)
        in_ch = out_ch
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    return shapes


def torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.tensor(7) if name.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
        for name, shape in torchvision_resnet18_shapes().items()
    }


def method_with(path) -> DenseSiamMethod:
    return DenseSiamMethod({"mode": "segment", "model": {**TINY_MODEL, "backbone_weights": str(path)},
                            "data": {"image_size": 40, "view1": {"size": 32}}})  # fmt: skip


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_torchvision_state_dict_starts_the_backbone(tmp_path, suffix: str) -> None:
    state = torchvision_state()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    method = method_with(path)
    loaded = method.model.backbone.state_dict()
    assert {k for k in state if not k.startswith("fc.")} == set(loaded)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name
    # A training choice, not part of the model: the saved model config does not carry it.
    assert "backbone_weights" not in method.model_config()
    assert "backbone_weights" not in DenseSiamMethod.model_section({"model": {**TINY_MODEL, "backbone_weights": "x"}})


def test_without_num_batches_tracked_as_older_files(tmp_path) -> None:
    state = {k: v for k, v in torchvision_state().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = resnet18()
    load_backbone_weights(model, tmp_path / "old.pth")
    assert torch.equal(model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def one_line_error(path) -> str:
    with pytest.raises(UserError) as info:
        load_backbone_weights(resnet18(), path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_shapes_and_names_are_listed_in_one_line(tmp_path) -> None:
    state = torchvision_state()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    message = one_line_error(tmp_path / "shape.pth")
    assert "1 of the wrong shape (layer1.0.conv1.weight [32, 64, 3, 3] for [64, 64, 3, 3])" in message

    renamed = {f"module.{k}": v for k, v in torchvision_state().items()}  # a DDP-wrapped model's names
    torch.save(renamed, tmp_path / "names.pth")
    message = one_line_error(tmp_path / "names.pth")
    assert "100 missing (conv1.weight, bn1.weight, bn1.bias, ...)" in message
    assert "122 unexpected (module.conv1.weight, module.bn1.weight, module.bn1.bias, ...)" in message

    torch.save(torchvision_state(), tmp_path / "ok.pth")
    from annofree.models.resnet import resnet50

    with pytest.raises(UserError, match="wrong shape"):
        load_backbone_weights(resnet50(), tmp_path / "ok.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    assert "not a state dict" in one_line_error(tmp_path / "list.pth")
    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04 not a zip")
    assert "cannot read weights" in one_line_error(tmp_path / "torn.pth")
    assert "no such weights file" in one_line_error(tmp_path / "absent.pth")


class CreatesAFile:
    """Unpickling this calls open(target, "w"): a pickle that runs code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path) -> None:
    state = torchvision_state()
    state["conv1.weight"] = CreatesAFile(str(tmp_path / "pwned"))
    torch.save(state, tmp_path / "evil.pth")
    message = one_line_error(tmp_path / "evil.pth")
    assert "refused" in message and not (tmp_path / "pwned").exists()
    # The file is really malicious: an unrestricted load creates the file.
    torch.save({"x": CreatesAFile(str(tmp_path / "proof"))}, tmp_path / "proof.pth")
    torch.load(tmp_path / "proof.pth", weights_only=False)
    assert (tmp_path / "proof").exists()


def test_config_path_is_relative_to_the_config_file(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    config = tmp_path / "sub" / "c.yaml"
    config.write_text(yaml.safe_dump({"method": "densesiam", "model": {"backbone_weights": "../r18.pth"}}))
    assert load_config(config)["model"]["backbone_weights"] == str(tmp_path / "r18.pth")
