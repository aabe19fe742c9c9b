"""annofree's GroupViT against Hugging Face transformers' GroupViTModel: conversion, parity, the convert command."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
import torch.nn.functional as F

from annofree.interop.hf import config_from_hf, from_hf_model, state_dict_from_hf
from annofree.models import GroupViTConfig

transformers = pytest.importorskip("transformers")

EMBED_TOL = 1e-4
GROUPING_TOL = 1e-5

# Small configs that differ from the default in every dimension the conversion maps. The group counts
# keep num_output_groups[i-1] == num_group_tokens[i-1] where a group projector exists: transformers sizes
# the projector by the former, the official code by the latter (transformers cannot run other configs).
SMALL_THREE_STAGES = {
    "vision_config": {
        "hidden_size": 48,
        "intermediate_size": 192,  # transformers sizes the pre-assign MLP by it too: 4x width is the official one
        "num_attention_heads": 3,
        "depths": [2, 1, 1],
        "num_hidden_layers": 4,
        "num_group_tokens": [16, 6, 0],
        "num_output_groups": [16, 3, 3],  # stage 2 merges 6 group tokens into 3 output groups
        "image_size": 48,
        "patch_size": 8,
        "assign_mlp_ratio": [1.0, 2.0],
        "assign_eps": 0.5,
        "layer_norm_eps": 1e-6,
    },
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "vocab_size": 300,
        "max_position_embeddings": 16,
        "bos_token_id": 298,
        "eos_token_id": 299,
        "pad_token_id": 0,
    },
    "projection_dim": 24,
    "projection_intermediate_dim": 64,
    "logit_scale_init_value": 1.5,
}
SMALL_TWO_STAGES = {
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "depths": [1, 2],
        "num_hidden_layers": 3,
        "num_group_tokens": [5, 0],
        "num_output_groups": [7, 7],  # one grouping stage, 5 group tokens -> 7 output groups
        "image_size": 40,
        "patch_size": 10,
    },
    "text_config": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "vocab_size": 50,
        "max_position_embeddings": 10,
        "bos_token_id": 48,
        "eos_token_id": 49,
        "pad_token_id": 0,
    },
    "projection_dim": 8,
    "projection_intermediate_dim": 32,
}


# MLP widths other than 4x (issue 18.5): the vision intermediate_size, 2.5 x hidden_size, sizes the blocks' MLPs and
# the pre-assign MLP in transformers; the text one (61 on a width of 56) is no whole ratio, and int(56 * 61 / 56)
# is 60 in floating point.
MLP_WIDTHS = {
    **SMALL_THREE_STAGES,
    "vision_config": {**SMALL_THREE_STAGES["vision_config"], "intermediate_size": 120},
    "text_config": {**SMALL_THREE_STAGES["text_config"], "hidden_size": 56, "intermediate_size": 61},
}


def build_hf(config: dict | None = None, seed: int = 0, sharpening: float = 10.0):
    """A randomly initialised transformers GroupViTModel in eval mode, with decisive grouping.

    Random weights give near-uniform assignment logits, so an argmax could be decided by float rounding
    (gaps near 1e-6 occur). Scaling the assignment queries widens the gaps, as training does; it changes
    the weights, not the computation. Narrow models need a larger factor; much larger factors than needed
    make the softmax amplify rounding instead.
    """
    torch.manual_seed(seed)
    model = transformers.GroupViTModel(transformers.GroupViTConfig(**(config or {}))).eval()
    with torch.no_grad():
        for stage in model.vision_model.encoder.stages:
            if stage.downsample is not None:
                stage.downsample.assign.q_proj.weight.mul_(sharpening)
        # Non-trivial BatchNorm statistics, so eval mode is tested with them.
        for head in (model.visual_projection, model.text_projection):
            head[1].running_mean.normal_(0.0, 0.1)
            head[1].running_var.uniform_(0.5, 2.0)
    return model


def random_inputs(hf_config, batch: int, size: tuple[int, int], length: int, seed: int = 1):
    """Pixels and token ids (start, words, end, then padding with 0 or with the end id)."""
    gen = torch.Generator().manual_seed(seed)
    text = hf_config.text_config
    pixels = torch.randn(batch, 3, *size, generator=gen)
    ids = torch.randint(1, text.bos_token_id, (batch, length), generator=gen)
    ids[:, 0] = text.bos_token_id
    for row in range(batch):
        end = 2 + row % (length - 2)
        ids[row, end] = text.eos_token_id
        ids[row, end + 1 :] = 0 if row % 2 else text.eos_token_id
    return pixels, ids


def hf_vision(hf, pixels: torch.Tensor):
    """transformers' vision tower with its own position-embedding interpolation switched on.

    ``GroupViTVisionTransformer.forward`` does not pass ``interpolate_pos_encoding`` on, so the three
    steps are called here; at the native size this is exactly its forward.
    """
    vision = hf.vision_model
    embeddings = vision.embeddings(pixels, interpolate_pos_encoding=True)
    encoded = vision.encoder(embeddings, output_attentions=True, return_dict=True)
    return vision.layernorm(encoded.last_hidden_state), encoded.attentions


def hf_chained_grouping(attentions) -> torch.Tensor:
    """transformers' soft assignments ``[B, S_i, N_i]`` chained into patch -> final group maps ``[B, N_0, G]``."""
    grouping = attentions[0].transpose(1, 2)
    for attention in attentions[1:]:
        grouping = grouping @ attention.transpose(1, 2)
    return grouping


def assert_parity(hf, ours, pixels: torch.Tensor, ids: torch.Tensor, check_encode_image: bool = True) -> None:
    """Image, group and text embeddings within 1e-4; soft maps and chained grouping within 1e-5, same argmax."""
    with torch.no_grad():
        tokens, attentions = hf_vision(hf, pixels)
        hf_image = F.normalize(hf.visual_projection(tokens.mean(dim=1)), dim=-1)
        b, g, c = tokens.shape
        hf_groups = F.normalize(hf.visual_projection(tokens.reshape(b * g, c)), dim=-1).reshape(b, g, -1)
        hf_text = F.normalize(hf.get_text_features(input_ids=ids).pooler_output, dim=-1)
        hf_grouping = hf_chained_grouping(attentions)

        out = ours.encode_groups(pixels)
        ours_text = ours.encode_text(ids)

    torch.testing.assert_close(out.image_embeds, hf_image, atol=EMBED_TOL, rtol=0)
    torch.testing.assert_close(out.group_embeds, hf_groups, atol=EMBED_TOL, rtol=0)
    torch.testing.assert_close(ours_text, hf_text, atol=EMBED_TOL, rtol=0)
    if check_encode_image:  # a second vision forward; skipped for the 55M-parameter default model
        with torch.no_grad():
            torch.testing.assert_close(ours.encode_image(pixels), hf_image, atol=EMBED_TOL, rtol=0)

    # Maps within GROUPING_TOL can only disagree on the argmax where the best two groups are closer than
    # twice that; the set-up must avoid such patches for the argmax check to hold by construction.
    top2 = hf_grouping.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 2 * GROUPING_TOL, "test set-up: grouping too ambiguous"
    assert out.grid == (
        pixels.shape[2] // ours.config.image.patch_size,
        pixels.shape[3] // ours.config.image.patch_size,
    )
    assert out.grouping.shape == hf_grouping.shape
    torch.testing.assert_close(out.grouping, hf_grouping, atol=GROUPING_TOL, rtol=0)
    assert torch.equal(out.grouping.argmax(dim=-1), hf_grouping.argmax(dim=-1))
    for mine, theirs in zip(out.soft_assignments, attentions, strict=True):
        torch.testing.assert_close(mine, theirs, atol=GROUPING_TOL, rtol=0)

    # transformers' own chaining and resize to pixels (used by its output_segmentation) agrees too.
    hf_maps = transformers.models.groupvit.modeling_groupvit.get_grouping_from_attentions(attentions, pixels.shape[2:])
    ours_maps = out.grouping.transpose(1, 2).reshape(b, g, *out.grid)
    ours_maps = F.interpolate(ours_maps, size=pixels.shape[2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours_maps, hf_maps, atol=GROUPING_TOL, rtol=0)


def test_default_config_matches_transformers() -> None:
    hf = build_hf()
    ours = from_hf_model(hf)
    assert not ours.training
    pixels, ids = random_inputs(hf.config, batch=2, size=(224, 224), length=8)
    assert_parity(hf, ours, pixels, ids, check_encode_image=False)


@pytest.mark.parametrize("config", [SMALL_THREE_STAGES, SMALL_TWO_STAGES], ids=["three_stages", "two_stages"])
def test_small_config_matches_transformers(config: dict) -> None:
    hf = build_hf(config, seed=3, sharpening=100.0)
    ours = from_hf_model(hf)
    v = hf.config.vision_config
    assert ours.config.image.num_output_groups == tuple(v.num_output_groups[: len(v.depths) - 1])
    native = (v.image_size, v.image_size)
    length = hf.config.text_config.max_position_embeddings
    pixels, ids = random_inputs(hf.config, batch=3, size=native, length=length)
    assert_parity(hf, ours, pixels, ids)
    # A larger, non-square input: both interpolate the position embedding bicubically.
    wide = (v.image_size + 2 * v.patch_size, v.image_size + 5 * v.patch_size)
    pixels, ids = random_inputs(hf.config, batch=2, size=wide, length=length - 3, seed=2)
    assert_parity(hf, ours, pixels, ids)


def test_mlp_widths_other_than_four_convert_with_equal_outputs() -> None:
    hf = build_hf(MLP_WIDTHS, seed=3, sharpening=100.0)
    ours = from_hf_model(hf)
    assert ours.config.image.mlp_ratio == ours.config.image.pre_assign_mlp_ratio == 2.5
    assert ours.img_encoder.layers[0].downsample.pre_assign_attn.mlp.fc1.out_features == 120
    assert ours.text_encoder.transformer.resblocks[0].mlp.c_fc.out_features == 61
    v = hf.config.vision_config
    pixels, ids = random_inputs(hf.config, batch=3, size=(v.image_size, v.image_size), length=16)
    assert_parity(hf, ours, pixels, ids)


def test_default_config_is_ours_without_drop_path() -> None:
    """transformers' default GroupViT is annofree's default (gcc_yfcc) architecture, drop path aside."""
    converted = config_from_hf(transformers.GroupViTConfig())
    ours = GroupViTConfig()
    assert converted.logit_scale_init == pytest.approx(ours.logit_scale_init, abs=1e-4)
    assert converted.image.drop_path_rate == 0.0
    expected = dataclasses.replace(
        ours,
        image=dataclasses.replace(ours.image, drop_path_rate=0.0),
        logit_scale_init=converted.logit_scale_init,
    )
    assert converted == expected


@pytest.mark.parametrize(
    ("vision", "text", "message"),
    [
        ({"num_output_groups": [8, 3, 3]}, {}, "num_output_groups"),
        ({"hidden_act": "relu"}, {}, "hidden_act"),
        ({"num_group_tokens": [16, 6, 2]}, {}, "num_group_tokens"),
        ({}, {"eos_token_id": 5}, "eos_token_id"),
        ({"image_size": [48, 64]}, {}, "square"),
    ],
)
def test_config_from_hf_refuses_what_annofree_cannot_express(vision: dict, text: dict, message: str) -> None:
    config = transformers.GroupViTConfig(
        vision_config={**SMALL_THREE_STAGES["vision_config"], **vision},
        text_config={**SMALL_THREE_STAGES["text_config"], **text},
    )
    with pytest.raises(ValueError, match=message):
        config_from_hf(config)


def test_state_dict_from_hf_fuses_qkv_in_order_and_rejects_unknown_names() -> None:
    q, k, v = torch.full((2, 2), 1.0), torch.full((2, 2), 2.0), torch.full((2, 2), 3.0)
    prefix = "vision_model.encoder.stages.1.layers.0.self_attn"
    state = state_dict_from_hf(
        {f"{prefix}.v_proj.weight": v, f"{prefix}.q_proj.weight": q, f"{prefix}.k_proj.weight": k}
    )
    assert torch.equal(state["img_encoder.layers.1.blocks.0.attn.qkv.weight"], torch.cat([q, k, v]))
    with pytest.raises(KeyError, match="mystery"):
        state_dict_from_hf({"vision_model.mystery.weight": q})
    with pytest.raises(KeyError, match="only"):
        state_dict_from_hf({f"{prefix}.q_proj.weight": q})


# ----------------------------------------------------------------------------- annofree convert --from hf


def _run_cli(argv: list[str]) -> int:
    from annofree.cli import main

    return main(argv)


def test_convert_command_writes_weights_that_load_and_match(tmp_path) -> None:
    import annofree

    hf = build_hf(SMALL_THREE_STAGES, seed=5, sharpening=100.0)
    checkpoint = tmp_path / "hf_groupvit"
    hf.save_pretrained(checkpoint)
    out = tmp_path / "run"
    assert _run_cli(["convert", "--from", "hf", str(checkpoint), "--out", str(out)]) == 0
    model = annofree.load(out)
    assert model.config == config_from_hf(hf.config)
    pixels, ids = random_inputs(hf.config, batch=2, size=(48, 48), length=16)
    assert_parity(hf, model, pixels, ids)


def test_convert_command_names_a_directory_that_is_not_groupvit(tmp_path, capsys) -> None:
    checkpoint = tmp_path / "bert_dir"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert _run_cli(["convert", "--from", "hf", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "not a GroupViT checkpoint" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [None, "config-less"], ids=["missing", "no_config"])
def test_convert_command_rejects_missing_or_empty_directories(tmp_path, capsys, content) -> None:
    checkpoint = tmp_path / "nowhere"
    if content:
        checkpoint.mkdir()
    assert _run_cli(["convert", "--from", "hf", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert str(checkpoint) in capsys.readouterr().err


def test_convert_command_without_transformers_says_so(tmp_path, capsys, monkeypatch) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    assert _run_cli(["convert", "--from", "hf", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert "needs the optional package transformers" in capsys.readouterr().err


def test_convert_command_refuses_a_pair_with_nothing_to_convert(tmp_path, capsys) -> None:
    argv = ["convert", "--from", "hf", "--to", "hf", str(tmp_path), "--out", str(tmp_path / "out")]
    assert _run_cli(argv) == 2
    assert "nothing to convert" in capsys.readouterr().err
