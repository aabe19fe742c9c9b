"""The deployable DenseSiam: shapes at input resolution, optional heads, parameter names, weights round trip."""

from __future__ import annotations

import pytest
import torch

import annofree
from annofree.errors import UserError
from annofree.models import DenseSiam, DenseSiamConfig
from annofree.weights import save_weights

TINY = {"dense_dim": 5, "aux_dim": 7, "fpn_channels": 16, "dense_hidden": 16, "dense_pred_hidden": 8, "region_dim": 8}


def tiny(seed: int = 0, **changes) -> DenseSiam:
    torch.manual_seed(seed)
    return DenseSiam(DenseSiamConfig(**{**TINY, **changes}))


def test_inference_shapes_at_input_resolution() -> None:
    model = tiny().eval()
    pixels = torch.rand(2, 3, 36, 52)  # not multiples of 32: the FPN follows res2's size
    assert model.dense_features(pixels).shape == (2, 16, 9, 13)
    assert model.cluster_logits(pixels).shape == (2, 5, 36, 52)
    assert model.cluster_logits(pixels, size=(10, 12)).shape == (2, 5, 10, 12)
    clusters = model.segment_clusters(pixels)
    assert clusters.shape == (2, 36, 52) and clusters.dtype == torch.long
    assert int(clusters.min()) >= 0 and int(clusters.max()) < 5
    torch.testing.assert_close(model(pixels), model.cluster_logits(pixels))


def test_pixels_are_normalised_inside() -> None:
    model = tiny().eval()
    pixels = torch.rand(1, 3, 32, 32)
    normalized = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model.dense_features(pixels), model.encode(normalized).dense)


def test_without_fpn_the_dense_features_are_res5() -> None:
    model = tiny(fpn=False).eval()
    encoded = model.encode(torch.rand(1, 3, 64, 64))
    assert encoded.dense.shape == (1, 512, 2, 2) and encoded.dense is encoded.res5
    assert model.fpn is None and model.projector[0].in_channels == 512
    assert model.cluster_logits(torch.rand(1, 3, 64, 64)).shape == (1, 5, 64, 64)


def test_optional_heads_and_parameter_names() -> None:
    bare = tiny(aux_dim=0, region_branch=False)
    assert bare.aux_projector is None and bare.global_projector is None and bare.region is None
    keys = set(tiny(global_branch=True, global_dim=16, global_hidden=16, global_pred_hidden=4).state_dict())
    for key in (
        "backbone.conv1.weight",
        "backbone.layer1.0.bn1.running_mean",
        "fpn.lateral.res2.weight",
        "projector.0.weight",
        "projector.7.running_var",  # the final non-affine BN
        "predictor.3.bias",
        "aux_projector.6.weight",
        "global_projector.0.weight",
        "global_predictor.3.bias",
        "region.projector.0.weight",
        "region.predictor.3.bias",
    ):
        assert key in keys, key
    assert not any("pixel_" in key or key.startswith("backbone.fc") for key in keys)


def test_global_embedding_shapes_and_missing_branch() -> None:
    model = tiny(global_branch=True, global_dim=16, global_hidden=12, global_pred_hidden=4)
    z, p = model.global_embedding(model.encode(torch.rand(2, 3, 32, 32)).res5)
    assert z.shape == p.shape == (2, 16)
    with pytest.raises(RuntimeError, match="no global branch"):
        tiny().global_embedding(torch.zeros(2, 512, 1, 1))


def test_config_round_trip_and_errors() -> None:
    config = DenseSiamConfig(**TINY, global_branch=True)
    assert DenseSiamConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown config key model\.clusters \(known: model\.backbone, "):
        DenseSiamConfig.from_dict({"clusters": 3})
    with pytest.raises(ValueError, match="backbone"):
        DenseSiamConfig(backbone="resnet34")
    with pytest.raises(ValueError, match="aux_dim"):
        DenseSiamConfig(aux_dim=1)


def test_weights_round_trip_through_annofree_load(tmp_path) -> None:
    model = tiny(seed=3, global_branch=True, global_dim=16, global_hidden=16, global_pred_hidden=4)
    with torch.no_grad():  # non-default BN statistics must survive too
        model.projector[-1].running_mean.uniform_()
    save_weights(tmp_path / "model.safetensors", model, "densesiam", model.config.to_dict())
    loaded = annofree.load(tmp_path)
    assert isinstance(loaded, DenseSiam) and not loaded.training
    assert loaded.config == model.config
    pixels = torch.rand(2, 3, 32, 40)
    torch.testing.assert_close(loaded.cluster_logits(pixels), model.eval().cluster_logits(pixels))
    other = tiny(aux_dim=0)
    save_weights(tmp_path / "bad.safetensors", other, "densesiam", model.config.to_dict())
    with pytest.raises(UserError, match="do not match the stored densesiam config"):
        annofree.load(tmp_path / "bad.safetensors")
