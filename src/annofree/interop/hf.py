"""Conversion from Hugging Face transformers' ``GroupViTModel`` into annofree's GroupViT."""

from __future__ import annotations

import re
from typing import Any

import torch

from annofree.models.config import GroupViTConfig, ImageEncoderConfig, TextEncoderConfig


def config_from_hf(hf_config: Any) -> GroupViTConfig:
    """Translate a ``transformers.GroupViTConfig`` into ours."""
    v, t = hf_config.vision_config, hf_config.text_config
    heads = v.num_attention_heads
    image = ImageEncoderConfig(
        img_size=v.image_size,
        patch_size=v.patch_size,
        in_chans=v.num_channels,
        embed_dim=v.hidden_size,
        depths=tuple(v.depths),
        num_heads=(heads,) * len(v.depths),
        num_group_tokens=tuple(v.num_group_tokens),
        num_output_groups=tuple(v.num_output_groups),
        mlp_ratio=v.intermediate_size / v.hidden_size,
        assign_mlp_ratio=tuple(v.assign_mlp_ratio),
        assign_eps=v.assign_eps,
        layer_norm_eps=v.layer_norm_eps,
        drop_path_rate=0.0,
    )
    text = TextEncoderConfig(
        context_length=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        width=t.hidden_size,
        layers=t.num_hidden_layers,
        heads=t.num_attention_heads,
        mlp_ratio=t.intermediate_size / t.hidden_size,
        layer_norm_eps=t.layer_norm_eps,
    )
    return GroupViTConfig(
        image=image,
        text=text,
        embed_dim=hf_config.projection_dim,
        proj_hidden_dim=hf_config.projection_intermediate_dim,
        logit_scale_init=float(hf_config.logit_scale_init_value),
    )


# (pattern on transformers' names, replacement in annofree's names); applied in order, first match wins.
_RENAMES = [
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
    (r"^text_model\.embeddings\.token_embedding\.", "text_encoder.token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "text_encoder.positional_embedding"),
    (
        r"^text_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.",
        r"text_encoder.transformer.resblocks.\1.ln_\2.",
    ),
    (
        r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
        r"text_encoder.transformer.resblocks.\1.attn.out_proj.",
    ),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.", r"text_encoder.transformer.resblocks.\1.mlp.c_fc."),
    (
        r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.",
        r"text_encoder.transformer.resblocks.\1.mlp.c_proj.",
    ),
    (r"^text_model\.final_layer_norm\.", "text_encoder.ln_final."),
    (r"^visual_projection\.([01])\.", r"img_projector.linear_hidden.\1."),
    (r"^visual_projection\.3\.", "img_projector.linear_out."),
    (r"^text_projection\.([01])\.", r"text_projector.linear_hidden.\1."),
    (r"^text_projection\.3\.", "text_projector.linear_out."),
    (r"^logit_scale$", "logit_scale"),
]
_QKV = re.compile(
    r"^(vision_model\.encoder\.stages\.\d+\.layers\.\d+|text_model\.encoder\.layers\.\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$"
)


def _rename(name: str) -> str:
    for pattern, repl in _RENAMES:
        new, count = re.subn(pattern, repl, name)
        if count:
            return new
    raise KeyError(f"no annofree name for transformers parameter {name!r}")


def _fused_qkv_name(prefix: str, kind: str) -> str:
    if prefix.startswith("text_model"):
        layer = prefix.rsplit(".", 1)[1]
        return f"text_encoder.transformer.resblocks.{layer}.attn.in_proj_{kind}"
    stage, layer = re.findall(r"\d+", prefix)
    return f"img_encoder.layers.{stage}.blocks.{layer}.attn.qkv.{kind}"


def state_dict_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename transformers' parameters to annofree's, fusing the separate q/k/v projections."""
    out: dict[str, torch.Tensor] = {}
    pending: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        if name.endswith("position_ids"):
            continue
        match = _QKV.match(name)
        if match:
            prefix, which, kind = match.groups()
            pending.setdefault((prefix, kind), {})[which] = tensor
            continue
        out[_rename(name)] = tensor
    for (prefix, kind), parts in pending.items():
        out[_fused_qkv_name(prefix, kind)] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def from_hf_model(hf_model: Any):
    """A ``transformers.GroupViTModel`` -> an annofree ``GroupViT`` with the same weights."""
    from annofree.models import GroupViT

    model = GroupViT(config_from_hf(hf_model.config))
    state = state_dict_from_hf(hf_model.state_dict())
    # transformers has no multi-label temperature: keep ours at its initial value.
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"multi_label_logit_scale"}:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model
