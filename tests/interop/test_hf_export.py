"""annofree -> transformers: the exported directory loads in transformers with equal outputs, and comes back exactly."""

from __future__ import annotations

import json

import pytest
import torch

from annofree.errors import UserError
from annofree.interop.hf import config_to_hf, from_hf_model, load_hf_checkpoint, save_hf_checkpoint, state_dict_to_hf
from annofree.models import GroupViTConfig
from tests.interop.test_hf import (
    MLP_WIDTHS,
    SMALL_THREE_STAGES,
    SMALL_TWO_STAGES,
    assert_parity,
    build_hf,
    random_inputs,
)
from tests.tiny import tiny_groupvit

transformers = pytest.importorskip("transformers")


def _ours(config: dict, seed: int = 3):
    """An annofree model with decisive grouping and a trained-looking multi-label temperature."""
    model = from_hf_model(build_hf(config, seed=seed, sharpening=100.0))
    with torch.no_grad():
        model.multi_label_logit_scale.fill_(3.25)
    return model


@pytest.mark.parametrize("config", [SMALL_THREE_STAGES, SMALL_TWO_STAGES], ids=["three_stages", "two_stages"])
def test_transformers_loads_our_export_with_equal_outputs(tmp_path, config: dict) -> None:
    ours = _ours(config)
    save_hf_checkpoint(ours, tmp_path / "hf")
    hf, info = transformers.GroupViTModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    hf.eval()
    v = hf.config.vision_config
    length = hf.config.text_config.max_position_embeddings
    pixels, ids = random_inputs(hf.config, batch=2, size=(v.image_size, v.image_size), length=length)
    assert_parity(hf, ours, pixels, ids)


def test_mlp_widths_other_than_four_go_both_ways(tmp_path) -> None:
    """transformers (intermediate_size 2.5 x hidden_size) -> annofree -> transformers, equal outputs each way."""
    source = build_hf(MLP_WIDTHS, seed=4, sharpening=100.0)
    ours = from_hf_model(source)
    save_hf_checkpoint(ours, tmp_path / "hf")
    back, info = transformers.GroupViTModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()), info
    back.eval()
    assert back.config.vision_config.intermediate_size == 120 and back.config.text_config.intermediate_size == 61
    before, after = source.state_dict(), back.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    pixels, ids = random_inputs(back.config, batch=2, size=(48, 48), length=16)
    assert_parity(source, ours, pixels, ids)
    assert_parity(back, ours, pixels, ids)


def test_annofree_hf_annofree_round_trip_is_exact(tmp_path) -> None:
    ours = _ours(SMALL_THREE_STAGES)
    back = load_hf_checkpoint(save_hf_checkpoint(ours, tmp_path / "hf"))
    assert back.config == ours.config
    mine, theirs = ours.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert torch.equal(tensor, theirs[name]), name


def test_export_writes_the_pixel_statistics_for_transformers_processor(tmp_path) -> None:
    ours = _ours(SMALL_TWO_STAGES)
    save_hf_checkpoint(ours, tmp_path / "hf")
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == list(ours.config.pixel_mean)
    assert processor["image_std"] == list(ours.config.pixel_std)
    image_processor = transformers.CLIPImageProcessor.from_pretrained(tmp_path / "hf")
    assert list(image_processor.image_mean) == pytest.approx(list(ours.config.pixel_mean))


def test_state_dict_to_hf_splits_qkv_in_order() -> None:
    model = tiny_groupvit(vocab_size=50)
    state = model.state_dict()
    hf = state_dict_to_hf(state)
    fused = state["img_encoder.layers.0.blocks.0.attn.qkv.weight"]
    prefix = "vision_model.encoder.stages.0.layers.0.self_attn"
    parts = [hf[f"{prefix}.{w}_proj.weight"] for w in "qkv"]
    assert torch.equal(torch.cat(parts), fused)
    assert "multi_label_logit_scale" not in hf


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"stem": "conv"}, "stem"),
        ({"hard_assignment": False}, "soft assignment"),
        ({"stem": "cnn"}, "stem"),
        ({"group_residual": False}, "group query"),
        ({"num_heads": [6, 3, 6]}, "per-stage heads"),
        ({"mlp_ratio": 2.5}, "pre_assign_mlp_ratio 4.0 differ"),
    ],
)
def test_export_refuses_what_transformers_cannot_run(image: dict, message: str) -> None:
    config = GroupViTConfig.from_dict({"image": image})
    with pytest.raises(UserError, match=message):
        config_to_hf(config)
