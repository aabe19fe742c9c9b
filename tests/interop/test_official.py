"""The official NVlabs/GroupViT checkpoint format: reading it safely, converting both ways.

The official file of the test is built independently of annofree's converter: a transformers GroupViTModel
(a second implementation) is renamed with the documented official <-> transformers mapping
(``../shared/reference/groupvit.md``, "State-dict names") written out below, projections as 1x1 Conv1d
kernels, then saved the way the official training script saves (``{"model": ..., "optimizer": ...,
"config": OmegaConf, "metrics": defaultdict}``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re

import pytest
import torch

from annofree.errors import UserError
from annofree.interop.official import (
    config_from_official,
    load_official_checkpoint,
    save_official_checkpoint,
    state_dict_from_official,
    state_dict_to_official,
)
from annofree.interop.safe_load import load_pth
from annofree.models import GroupViT, GroupViTConfig
from tests.interop.test_hf import SMALL_THREE_STAGES, assert_parity, build_hf, random_inputs

transformers = pytest.importorskip("transformers")

# A small config the official code can build. The vision side is test_hf's three-stage one without the
# settings a weights-only file cannot carry (assign_eps, layer_norm_eps: the released defaults are meant);
# text heads are width // 64 in the official code, so the text width is 128.
_NOT_IN_THE_WEIGHTS = ("assign_eps", "layer_norm_eps")
OFFICIAL_SMALL = {
    "vision_config": {k: v for k, v in SMALL_THREE_STAGES["vision_config"].items() if k not in _NOT_IN_THE_WEIGHTS},
    "text_config": {
        "hidden_size": 128,
        "intermediate_size": 512,
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
}

# The documented mapping, transformers -> official (first match wins).
_DOC_MAPPING = [
    (r"^vision_model\.embeddings\.patch_embeddings\.projection\.", "img_encoder.patch_embed.proj."),
    (r"^vision_model\.embeddings\.layernorm\.", "img_encoder.patch_embed.norm."),
    (r"^vision_model\.embeddings\.position_embeddings$", "img_encoder.pos_embed"),
    (
        r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_norm(\d)\.",
        r"img_encoder.layers.\1.blocks.\2.norm\3.",
    ),
    (
        r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.self_attn\.out_proj\.",
        r"img_encoder.layers.\1.blocks.\2.attn.proj.",
    ),
    (r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.mlp\.", r"img_encoder.layers.\1.blocks.\2.mlp."),
    (
        r"^vision_model\.encoder\.stages\.(\d+)\.downsample\.pre_assign_attn\.attn\.out_proj\.",
        r"img_encoder.layers.\1.downsample.pre_assign_attn.attn.proj.",
    ),
    (r"^vision_model\.encoder\.stages\.(\d+)\.", r"img_encoder.layers.\1."),
    (r"^vision_model\.layernorm\.", "img_encoder.norm."),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"text_encoder.transformer.resblocks.\1.ln_\2."),
    (
        r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
        r"text_encoder.transformer.resblocks.\1.attn.out_proj.",
    ),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.", r"text_encoder.transformer.resblocks.\1.mlp.c_fc."),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.", r"text_encoder.transformer.resblocks.\1.mlp.c_proj."),
    (r"^text_model\.embeddings\.token_embedding\.", "text_encoder.token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "text_encoder.positional_embedding"),
    (r"^text_model\.final_layer_norm\.", "text_encoder.ln_final."),
    (r"^visual_projection\.([01])\.", r"img_projector.linear_hidden.\1."),
    (r"^visual_projection\.3\.", "img_projector.linear_out."),
    (r"^text_projection\.([01])\.", r"text_projector.linear_hidden.\1."),
    (r"^text_projection\.3\.", "text_projector.linear_out."),
    (r"^logit_scale$", "logit_scale"),
]


def _doc_rename(name: str) -> str:
    for pattern, repl in _DOC_MAPPING:
        new, count = re.subn(pattern, repl, name)
        if count:
            return new
    raise KeyError(name)


def official_state_from_hf(hf, multi_label: int = 3) -> dict[str, torch.Tensor]:
    """transformers weights -> the official state dict, by the documentation (fused qkv, Conv1d heads).

    The official MultiLabelContrastive creates ``multi_label_logit_scale`` only with ``multi_label > 0``.
    """
    hf_state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    out = {}
    for name in list(hf_state):
        match = re.match(r"^(.*)\.self_attn\.q_proj\.(weight|bias)$", name)
        if match:
            prefix, kind = match.groups()
            parts = [hf_state.pop(f"{prefix}.self_attn.{w}_proj.{kind}") for w in "qkv"]
            fused = _doc_rename(f"{prefix}.self_attn.out_proj.{kind}")
            if fused.startswith("text_encoder"):
                fused = fused.replace("attn.out_proj.", "attn.in_proj_")
            else:
                fused = fused.replace("attn.proj.", "attn.qkv.")
            out[fused] = torch.cat(parts)
    for name, tensor in hf_state.items():
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        official = _doc_rename(name)
        if re.match(r"^(img|text)_projector\.(linear_hidden\.0|linear_out)\.weight$", official):
            tensor = tensor.unsqueeze(-1)  # Conv1d(kernel_size=1)
        out[official] = tensor
    if multi_label > 0:
        out["multi_label_logit_scale"] = torch.tensor(2.5)
    return out


def _official_config(omegaconf, heads: list[int], multi_label: int = 3):
    """As the release configs: ``model.multi_label`` interpolates ``data.text_aug.multi_label`` (RedCaps: 0)."""
    return omegaconf.OmegaConf.create(
        {
            "data": {"text_aug": {"max_seq_len": 77, "multi_label": multi_label}},
            "model": {
                "type": "MultiLabelContrastive",
                "img_encoder": {"type": "GroupViT", "num_heads": heads},
                "contrast_temperature": 0.07,
                "multi_label": "${data.text_aug.multi_label}",
            },
            "train": {"amp_opt_level": "O1"},
        }
    )


def write_official_file(path, hf, *, ddp_prefix: bool = False, multi_label: int = 3) -> None:
    """Save as the official training script does: weights, optimizer, epoch, OmegaConf config, metrics."""
    omegaconf = pytest.importorskip("omegaconf")
    state = official_state_from_hf(hf, multi_label)
    if ddp_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    heads = [hf.config.vision_config.num_attention_heads] * len(hf.config.vision_config.depths)
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
            "epoch": 29,
            "config": _official_config(omegaconf, heads, multi_label),
            "metrics": collections.defaultdict(float, {"acc1": 43.7}),
        },
        path,
    )


@pytest.mark.parametrize("ddp_prefix", [False, True], ids=["plain", "ddp"])
def test_official_file_converts_to_the_model_it_came_from(tmp_path, ddp_prefix: bool) -> None:
    hf = build_hf(OFFICIAL_SMALL, seed=5, sharpening=100.0)
    write_official_file(tmp_path / "group_vit.pth", hf, ddp_prefix=ddp_prefix)
    ours = load_official_checkpoint(tmp_path / "group_vit.pth")
    assert ours.config.image.num_heads == (3, 3, 3)  # from the pickled OmegaConf config, read as data
    assert ours.config.text.heads == 2  # 128 // 64, as the official text encoder
    assert float(ours.multi_label_logit_scale.detach()) == 2.5
    v = hf.config.vision_config
    pixels, ids = random_inputs(hf.config, batch=2, size=(v.image_size, v.image_size), length=16)
    assert_parity(hf, ours, pixels, ids)


def test_redcaps_configuration_without_multi_label_scale_converts_to_the_model(tmp_path) -> None:
    """The RedCaps release trains with multi_label: 0, so its file has no multi_label_logit_scale (issue 18.1)."""
    hf = build_hf(OFFICIAL_SMALL, seed=11, sharpening=100.0)
    write_official_file(tmp_path / "group_vit_gcc_redcap_30e.pth", hf, multi_label=0)
    source = load_pth(tmp_path / "group_vit_gcc_redcap_30e.pth")["model"]
    assert "multi_label_logit_scale" not in source
    ours = load_official_checkpoint(tmp_path / "group_vit_gcc_redcap_30e.pth")
    # The value the official code gives the parameter it would create: log(1 / contrast_temperature).
    assert float(ours.multi_label_logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    mine = state_dict_to_official(ours.state_dict())
    assert mine.keys() - source.keys() == {"multi_label_logit_scale"}
    for name, tensor in source.items():
        assert torch.equal(mine[name], tensor), name
    v = hf.config.vision_config
    pixels, ids = random_inputs(hf.config, batch=2, size=(v.image_size, v.image_size), length=16)
    assert_parity(hf, ours, pixels, ids)


def test_a_shared_temperature_gives_the_multi_label_scale_the_contrastive_one(tmp_path) -> None:
    """share_temperature: true is the other switch without the key; the official multi-label loss uses logit_scale."""
    hf = build_hf(OFFICIAL_SMALL, seed=12, sharpening=100.0)
    state = official_state_from_hf(hf, multi_label=0)
    state["logit_scale"] = torch.tensor(4.125)
    config = {"model": {"img_encoder": {"num_heads": [3, 3, 3]}, "multi_label": 3, "share_temperature": True}}
    torch.save({"model": state, "config": config}, tmp_path / "shared.pth")
    ours = load_official_checkpoint(tmp_path / "shared.pth")
    assert float(ours.multi_label_logit_scale.detach()) == float(ours.logit_scale.detach()) == 4.125


def test_a_file_really_missing_a_weight_is_refused_in_one_line(tmp_path) -> None:
    hf = build_hf(OFFICIAL_SMALL, seed=13)
    state = official_state_from_hf(hf, multi_label=0)
    del state["img_encoder.layers.1.downsample.norm_x.weight"]
    torch.save({"model": state}, tmp_path / "cut.pth")
    with pytest.raises(UserError, match=r"cut\.pth: .*missing .*norm_x\.weight") as info:
        load_official_checkpoint(tmp_path / "cut.pth")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("dropped", "added", "message"),
    [
        ("img_encoder.patch_embed.norm.", None, "patch_norm: false"),
        (None, ("img_encoder.head.weight", (10, 48)), "num_classes > 0"),
        (None, ("img_projector.linear_hidden.3.weight", (64, 64, 1)), "proj_num_layers > 2"),
        ("img_projector.", None, "proj_num_layers: 0"),
    ],
    ids=["patch_norm", "head", "proj_layers", "no_projector"],
)
def test_official_switches_annofree_lacks_are_named(tmp_path, dropped, added, message: str) -> None:
    state = official_state_from_hf(build_hf(OFFICIAL_SMALL, seed=14))
    if dropped:
        state = {name: tensor for name, tensor in state.items() if not name.startswith(dropped)}
    if added:
        state[added[0]] = torch.zeros(added[1])
    torch.save({"model": state}, tmp_path / "switched.pth")
    with pytest.raises(UserError, match=re.escape(message)) as info:
        load_official_checkpoint(tmp_path / "switched.pth")
    assert "\n" not in str(info.value)


def test_blocks_without_qkv_bias_are_read_off_the_file(tmp_path) -> None:
    """The official qkv_bias switch (default true): a file without the biases converts to a model without them."""
    from tests.tiny import tiny_groupvit_config

    config = tiny_groupvit_config()
    config = dataclasses.replace(
        config,
        image=dataclasses.replace(config.image, qkv_bias=False),
        text=dataclasses.replace(config.text, width=64, heads=1),  # official text heads: width // 64
    )
    torch.manual_seed(0)
    model = GroupViT(config).eval()
    state = state_dict_to_official(model.state_dict())
    assert not any(name.endswith("attn.qkv.bias") for name in state)
    torch.save({"model": state, "config": {"model": {"img_encoder": {"num_heads": [2, 2, 2]}}}}, tmp_path / "nb.pth")
    back = load_official_checkpoint(tmp_path / "nb.pth")
    assert back.config.image.qkv_bias is False
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(pixels), model.encode_image(pixels), atol=0, rtol=0)


def test_annofree_official_annofree_round_trip_is_exact(tmp_path) -> None:
    from tests.interop.test_hf_export import _ours

    ours = _ours(SMALL_THREE_STAGES)
    path = save_official_checkpoint(ours, tmp_path / "out.pth")
    raw = load_pth(path)
    assert raw["model"]["img_projector.linear_out.weight"].ndim == 3  # Conv1d kernels, as the official code
    back = load_official_checkpoint(path)
    assert back.config == ours.config
    mine, theirs = ours.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert torch.equal(tensor, theirs[name]), name


def test_config_from_shapes_matches_the_released_architecture() -> None:
    """Without a readable config, the released gcc_yfcc architecture is recovered from the weights alone."""
    reference = GroupViTConfig()
    state = state_dict_from_official(state_dict_to_official(GroupViT(reference).state_dict()))
    config = config_from_official(state)
    assert config.image.num_heads == reference.image.num_heads == (6, 6, 6)
    for field in (
        "img_size",
        "patch_size",
        "embed_dim",
        "depths",
        "num_group_tokens",
        "num_output_groups",
        "mlp_ratio",
        "assign_mlp_ratio",
        "pre_assign_mlp_ratio",
        "qkv_bias",
    ):
        assert getattr(config.image, field) == getattr(reference.image, field), field
    assert config.text == reference.text
    assert (config.embed_dim, config.proj_hidden_dim) == (reference.embed_dim, reference.proj_hidden_dim)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run > pwned.txt",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"logit_scale": torch.tensor(1.0)}, "payload": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match=r"evil\.pth: refused: .*system"):
        load_official_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"not a checkpoint", "not a zip-format"), ("tensor", "not an official GroupViT")],
)
def test_bad_official_files_get_one_line_errors(tmp_path, content, message: str) -> None:
    path = tmp_path / "ckpt.pth"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        load_official_checkpoint(path)
    assert "\n" not in str(info.value)


def test_official_export_refuses_what_the_official_code_would_run_differently(tmp_path) -> None:
    model = GroupViT(GroupViTConfig.from_dict({"image": {"hard_assignment": False}, "text": {"layers": 1}}))
    with pytest.raises(UserError, match="soft-assignment"):
        save_official_checkpoint(model, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    model = GroupViT(GroupViTConfig.from_dict({"image": {"group_residual": False}, "text": {"layers": 1}}))
    with pytest.raises(UserError, match="group query"):
        save_official_checkpoint(model, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    model = GroupViT(GroupViTConfig.from_dict({"image": {"pre_assign_mlp_ratio": 2.5}, "text": {"layers": 1}}))
    with pytest.raises(UserError, match=r"pre-assign MLP at 4\.0 x width"):
        save_official_checkpoint(model, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_convert_command_chains_official_annofree_hf_official(tmp_path) -> None:
    """CLI: official -> annofree -> hf -> official; the tensors that come back are the ones that went in."""
    import annofree
    from annofree.cli import main

    hf = build_hf(OFFICIAL_SMALL, seed=7, sharpening=100.0)
    write_official_file(tmp_path / "release.pth", hf)
    steps = [
        ("official", "annofree", tmp_path / "release.pth", tmp_path / "w"),
        ("annofree", "hf", tmp_path / "w", tmp_path / "hf"),
        ("hf", "official", tmp_path / "hf", tmp_path / "back.pth"),
    ]
    for source_format, target_format, source, out in steps:
        argv = ["convert", "--from", source_format, "--to", target_format, str(source), "--out", str(out)]
        assert main(argv) == 0
    start, end = load_pth(tmp_path / "release.pth")["model"], load_pth(tmp_path / "back.pth")["model"]
    assert start.keys() == end.keys()
    for name, tensor in start.items():
        assert torch.equal(tensor, end[name]), name
    model = annofree.load(tmp_path / "w")
    assert model.config.image.num_heads == (3, 3, 3)
