"""Conversion between Hugging Face transformers' ``GroupViTModel`` and annofree's GroupViT, both ways.

transformers is not imported here: the functions take its objects (config, model, state dict) as
arguments, so this module loads without it. ``load_hf_checkpoint`` imports it on demand.

Differences between the two implementations that the conversion has to bridge:

- transformers keeps separate q/k/v projections in every self-attention layer; annofree fuses them
  (``attn.qkv`` in the image encoder, ``attn.in_proj_*`` in the text encoder), as the official code does.
- transformers' vision config carries ``num_output_groups`` with one extra, unused entry for the last
  stage; annofree's config drops it.
- transformers builds stage ``i``'s group projector with ``num_output_groups[i-1]`` inputs, the official
  code (and annofree) with ``num_group_tokens[i-1]``: the projector mixes the previous stage's group
  tokens, of which there are ``num_group_tokens[i-1]``. Where the two numbers differ transformers'
  model cannot run a forward pass (shape error), so such configs are refused. In every released
  config they agree.
- transformers pools the text at the first end-of-text id, annofree at the largest id (CLIP's way).
  They agree when the end-of-text id is the vocabulary's last id (CLIP's 49407), or when the config
  has the legacy ``eos_token_id == 2``, for which transformers also takes the largest id.
- transformers sizes the MLP of the pre-assign cross-attention block by the vision ``intermediate_size``,
  the width of the blocks' MLPs; the official code fixes it at 4x the width. annofree has a field for each
  (``mlp_ratio``, ``pre_assign_mlp_ratio``): both come from ``intermediate_size``, and an annofree model whose
  two widths differ cannot be exported (transformers has one number for both). MLP widths that are not a
  whole multiple of the width are kept exactly (:func:`~annofree.models.config.mlp_ratio_for`).
- transformers has no drop path and no multi-label temperature: the converted model gets
  ``drop_path_rate = 0`` and ``multi_label_logit_scale`` at its initial value. Its ``dropout``,
  ``attention_dropout`` and ``initializer_*`` act in training or at initialisation only and are not carried.
- Still refused, because annofree's GroupViT would compute something else: activations other than GELU
  (vision) and quick GELU (text), non-square image or patch sizes, an end-of-text id that is not the
  vocabulary's last (see above), and group counts transformers itself cannot run.
- Pixel normalisation is not part of transformers' model (its processor uses CLIP statistics); the
  converted config keeps annofree's ImageNet statistics, the ones GroupViT was trained with.
- The export writes tokenizer files: ``CLIPTokenizer`` / ``AutoProcessor`` called with
  ``padding="max_length", truncation=True`` give annofree's ids (:mod:`annofree.data.tokenizer`) at the
  model's context length, except for three classes of text (tests/interop/test_hf_tokenizer.py): text that
  ``ftfy.fix_text`` or ``html.unescape`` change (``&amp;``, curly quotes, mojibake, full-width letters,
  control characters: transformers' CLIP tokenizer has neither step), an upper-case sigma ending a word
  (``str.lower`` makes it final, transformers does not), and ``<|startoftext|>`` / ``<|endoftext|>`` written
  in the text (special for annofree, spelt out by transformers: ``split_special_tokens`` keeps the pad token
  ``"!"``, id 0 as annofree pads, from being matched in text).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from annofree.errors import UserError
from annofree.models.config import GroupViTConfig, ImageEncoderConfig, TextEncoderConfig, mlp_ratio_for

# Legacy CLIP configs set eos_token_id = 2; transformers then pools at the largest token id.
_LEGACY_EOS_ID = 2


def _square(value: Any, what: str) -> int:
    """transformers allows ``int`` or ``(h, w)`` sizes; annofree's encoder takes square ones."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{what} {tuple(value)} is not square; annofree takes square sizes")
        value = value[0]
    return int(value)


def _check_activation(config: Any, expected: str, what: str) -> None:
    act = getattr(config, "hidden_act", expected)
    if act != expected:
        raise ValueError(f"{what} hidden_act is {act!r}; annofree's GroupViT uses {expected!r}")


def _check_group_counts(num_group_tokens: tuple[int, ...], num_output_groups: tuple[int, ...]) -> None:
    """Stages with group tokens, then one without; projector sizes that transformers can run."""
    stages = len(num_group_tokens)
    if stages < 2 or num_group_tokens[-1] != 0 or any(n <= 0 for n in num_group_tokens[:-1]):
        raise ValueError(
            f"num_group_tokens {num_group_tokens}: annofree needs group tokens in every stage but the last, "
            "and none in the last"
        )
    if len(num_output_groups) < stages - 1:
        raise ValueError(
            f"num_output_groups {num_output_groups} needs an entry for each of {stages - 1} grouping stages"
        )
    for i in range(1, stages - 1):
        if num_output_groups[i - 1] != num_group_tokens[i - 1]:
            raise ValueError(
                f"stage {i}: transformers' group projector takes num_output_groups[{i - 1}] = "
                f"{num_output_groups[i - 1]} tokens but receives num_group_tokens[{i - 1}] = "
                f"{num_group_tokens[i - 1]} (the official GroupViT uses the latter); transformers cannot run this "
                "config, so it is not converted"
            )


def _check_eos(text_config: Any) -> None:
    eos = getattr(text_config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        raise ValueError(f"text eos_token_id {eos}: annofree pools at one end-of-text id")
    if eos is not None and eos not in (_LEGACY_EOS_ID, text_config.vocab_size - 1):
        raise ValueError(
            f"text eos_token_id {eos} is not the last id of the vocabulary ({text_config.vocab_size - 1}); "
            "annofree pools at the largest token id, as CLIP"
        )


def config_from_hf(hf_config: Any) -> GroupViTConfig:
    """Translate a ``transformers.GroupViTConfig`` into ours; ``ValueError`` for what annofree cannot express."""
    if not (hasattr(hf_config, "vision_config") and hasattr(hf_config, "text_config")):
        raise ValueError(f"not a GroupViT config (type {type(hf_config).__name__})")
    v, t = hf_config.vision_config, hf_config.text_config
    _check_activation(v, "gelu", "vision")
    _check_activation(t, "quick_gelu", "text")
    num_group_tokens, num_output_groups = tuple(v.num_group_tokens), tuple(v.num_output_groups)
    _check_group_counts(num_group_tokens, num_output_groups)
    _check_eos(t)
    ratio = v.assign_mlp_ratio
    assign_mlp_ratio = tuple(ratio) if isinstance(ratio, (list, tuple)) else (ratio, ratio)
    image = ImageEncoderConfig(
        img_size=_square(v.image_size, "image_size"),
        patch_size=_square(v.patch_size, "patch_size"),
        in_chans=v.num_channels,
        embed_dim=v.hidden_size,
        depths=tuple(v.depths),
        num_heads=(v.num_attention_heads,) * len(v.depths),
        num_group_tokens=num_group_tokens,
        num_output_groups=num_output_groups,
        mlp_ratio=mlp_ratio_for(v.hidden_size, v.intermediate_size),
        assign_mlp_ratio=assign_mlp_ratio,
        pre_assign_mlp_ratio=mlp_ratio_for(v.hidden_size, v.intermediate_size),
        assign_eps=v.assign_eps,
        layer_norm_eps=v.layer_norm_eps,
        drop_path_rate=0.0,  # transformers has no stochastic depth
    )
    text = TextEncoderConfig(
        context_length=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        width=t.hidden_size,
        layers=t.num_hidden_layers,
        heads=t.num_attention_heads,
        mlp_ratio=mlp_ratio_for(t.hidden_size, t.intermediate_size),
        layer_norm_eps=t.layer_norm_eps,
    )
    return GroupViTConfig(
        image=image,
        text=text,
        embed_dim=hf_config.projection_dim,
        proj_hidden_dim=hf_config.projection_intermediate_dim,
        logit_scale_init=float(hf_config.logit_scale_init_value),
    )


# Parameter names: (transformers, annofree) templates, read in order, first match wins, in both directions.
# ``{i}`` stands for a number that both names share; a template ending in "." is a prefix, any other a whole name.
# The fused q/k/v projections are not here: they are split and joined by _QKV / _FUSED below.
_NAME_PAIRS = [
    ("vision_model.embeddings.patch_embeddings.projection.", "img_encoder.patch_embed.proj."),
    ("vision_model.embeddings.layernorm.", "img_encoder.patch_embed.norm."),
    ("vision_model.embeddings.position_embeddings", "img_encoder.pos_embed"),
    ("vision_model.encoder.stages.{0}.layers.{1}.layer_norm{2}.", "img_encoder.layers.{0}.blocks.{1}.norm{2}."),
    ("vision_model.encoder.stages.{0}.layers.{1}.self_attn.out_proj.", "img_encoder.layers.{0}.blocks.{1}.attn.proj."),
    ("vision_model.encoder.stages.{0}.layers.{1}.mlp.", "img_encoder.layers.{0}.blocks.{1}.mlp."),
    (
        "vision_model.encoder.stages.{0}.downsample.pre_assign_attn.attn.out_proj.",
        "img_encoder.layers.{0}.downsample.pre_assign_attn.attn.proj.",
    ),
    # group_token, group_projector.{0,1} and the rest of downsample.* keep their names.
    ("vision_model.encoder.stages.{0}.", "img_encoder.layers.{0}."),
    ("vision_model.layernorm.", "img_encoder.norm."),
    ("text_model.embeddings.token_embedding.", "text_encoder.token_embedding."),
    ("text_model.embeddings.position_embedding.weight", "text_encoder.positional_embedding"),
    ("text_model.encoder.layers.{0}.layer_norm{1}.", "text_encoder.transformer.resblocks.{0}.ln_{1}."),
    ("text_model.encoder.layers.{0}.self_attn.out_proj.", "text_encoder.transformer.resblocks.{0}.attn.out_proj."),
    ("text_model.encoder.layers.{0}.mlp.fc1.", "text_encoder.transformer.resblocks.{0}.mlp.c_fc."),
    ("text_model.encoder.layers.{0}.mlp.fc2.", "text_encoder.transformer.resblocks.{0}.mlp.c_proj."),
    ("text_model.final_layer_norm.", "text_encoder.ln_final."),
    ("visual_projection.0.", "img_projector.linear_hidden.0."),
    ("visual_projection.1.", "img_projector.linear_hidden.1."),
    ("visual_projection.3.", "img_projector.linear_out."),
    ("text_projection.0.", "text_projector.linear_hidden.0."),
    ("text_projection.1.", "text_projector.linear_hidden.1."),
    ("text_projection.3.", "text_projector.linear_out."),
    ("logit_scale", "logit_scale"),
]
_SLOT = re.compile(r"\{(\d)\}")


def _rule(source: str, target: str) -> tuple[re.Pattern, str]:
    """(regex matching ``source``, replacement writing ``target``) with the shared numbers carried across."""
    slots = _SLOT.findall(source)
    pattern = "^" + "".join(re.escape(part) if k % 2 == 0 else r"(\d+)" for k, part in enumerate(_SLOT.split(source)))
    pattern += "" if source.endswith(".") else "$"
    replacement = _SLOT.sub(lambda m: f"\\g<{slots.index(m.group(1)) + 1}>", target)
    return re.compile(pattern), replacement


_RENAMES = [_rule(hf, ours) for hf, ours in _NAME_PAIRS]  # transformers -> annofree
_HF_RENAMES = [_rule(ours, hf) for hf, ours in _NAME_PAIRS]  # annofree -> transformers
_QKV = re.compile(
    r"^(vision_model\.encoder\.stages\.\d+\.layers\.\d+|text_model\.encoder\.layers\.\d+)"
    r"\.self_attn\.([qkv])_proj\.(weight|bias)$"
)
# In annofree but not in transformers: kept at its initial value by from_hf_model (unless config.json has it).
_ANNOFREE_ONLY = {"multi_label_logit_scale"}
# config.json key where save_hf_checkpoint keeps what transformers has no field for (transformers keeps it).
ANNOFREE_KEY = "annofree"


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
    """Rename transformers' parameters to annofree's, fusing the separate q/k/v projections (q, k, v order)."""
    out: dict[str, torch.Tensor] = {}
    pending: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        if name.endswith("position_ids"):  # a buffer of arange(), persistent in older transformers
            continue
        match = _QKV.match(name)
        if match:
            prefix, which, kind = match.groups()
            pending.setdefault((prefix, kind), {})[which] = tensor
            continue
        out[_rename(name)] = tensor
    for (prefix, kind), parts in pending.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"{prefix}.self_attn has only {sorted(parts)} {kind} projections")
        out[_fused_qkv_name(prefix, kind)] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def from_hf_model(hf_model: Any):
    """A ``transformers.GroupViTModel`` -> an annofree ``GroupViT`` with the same weights, in eval mode, fp32.

    A directory written by :func:`save_hf_checkpoint` also carries annofree's own config and the multi-label
    temperature (``config.json``, key ``annofree``); they are restored, so the round trip is exact.
    Raises ``ValueError`` for configs annofree cannot express (see the module docstring).
    """
    from annofree.models import GroupViT

    config = config_from_hf(hf_model.config)
    extra = getattr(hf_model.config, ANNOFREE_KEY, None) or {}
    if extra.get("config"):
        config = GroupViTConfig.from_dict(extra["config"])
    model = GroupViT(config)
    state = state_dict_from_hf(hf_model.state_dict())
    if "multi_label_logit_scale" in extra:
        state["multi_label_logit_scale"] = torch.tensor(float(extra["multi_label_logit_scale"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - _ANNOFREE_ONLY:
        raise ValueError(f"conversion mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return model.eval()


def load_hf_checkpoint(directory: str | Path):
    """Read a transformers GroupViT checkpoint directory (``config.json`` + weights) and convert it.

    Nothing is downloaded: ``directory`` must exist locally. Every failure is a ``UserError`` naming it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory (give a transformers checkpoint directory)")
    try:
        import transformers
    except ImportError:
        raise UserError(
            "reading transformers checkpoints needs the optional package transformers (pip install transformers)"
        ) from None
    try:
        hf_config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{directory}: no readable transformers config.json ({_first_line(exc)})") from None
    if getattr(hf_config, "model_type", None) != "groupvit":
        raise UserError(
            f"{directory}: not a GroupViT checkpoint (model_type {getattr(hf_config, 'model_type', None)!r}, "
            "expected 'groupvit')"
        )
    try:
        hf_model, info = transformers.GroupViTModel.from_pretrained(
            directory, config=hf_config, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{directory}: cannot load the GroupViT weights ({_first_line(exc)})") from None
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise UserError(f"{directory}: checkpoint lacks {len(missing)} GroupViT weights (first: {sorted(missing)[0]})")
    try:
        return from_hf_model(hf_model)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{directory}: cannot convert this GroupViT ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().strip("'\"")
    return text.splitlines()[0] if text else type(exc).__name__


# ---- annofree -> transformers -------------------------------------------------------------------------

_FUSED = re.compile(
    r"^(?:img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)"
    r"|text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias))$"
)


def _split_qkv(match: re.Match, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    stage, layer, kind, text_layer, text_kind = match.groups()
    if text_layer is not None:
        prefix, kind = f"text_model.encoder.layers.{text_layer}.self_attn", text_kind
    else:
        prefix = f"vision_model.encoder.stages.{stage}.layers.{layer}.self_attn"
    q, k, v = tensor.chunk(3, dim=0)
    return {f"{prefix}.{which}_proj.{kind}": part.clone() for which, part in zip("qkv", (q, k, v), strict=True)}


def state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """annofree's parameters -> transformers' names, splitting fused q/k/v; annofree-only entries are dropped."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in _ANNOFREE_ONLY:
            continue
        match = _FUSED.match(name)
        if match:
            out.update(_split_qkv(match, tensor))
            continue
        for pattern, repl in _HF_RENAMES:
            new, count = re.subn(pattern, repl, name)
            if count:
                out[new] = tensor.detach().clone()
                break
        else:
            raise KeyError(f"no transformers name for annofree parameter {name!r}")
    return out


def _check_hf_expressible(config: GroupViTConfig) -> None:
    """What transformers' GroupViT cannot run the same way; refused rather than exported wrong."""
    image = config.image
    problems = []
    if image.stem != "patch":
        problems.append(f"its {image.stem!r} stem (transformers has the linear patch embedding only)")
    if not image.hard_assignment:
        problems.append("soft assignment (transformers always assigns hard)")
    if not image.group_residual:
        problems.append("segments without the group query added (transformers always adds it)")
    if len(set(image.num_heads)) != 1:
        problems.append(f"per-stage heads {image.num_heads} (transformers has one head count)")
    if int(image.embed_dim * image.mlp_ratio) != int(image.embed_dim * image.pre_assign_mlp_ratio):
        problems.append(
            f"mlp_ratio {image.mlp_ratio} and pre_assign_mlp_ratio {image.pre_assign_mlp_ratio} differ (transformers "
            "sizes both MLPs by its one intermediate_size)"
        )
    if not image.qkv_bias:
        problems.append("qkv without bias")
    if problems:
        raise UserError("transformers' GroupViT cannot express this model: " + "; ".join(problems))


def config_to_hf(config: GroupViTConfig) -> dict[str, Any]:
    """The ``config.json`` of a ``transformers.GroupViTModel`` equivalent to ``config`` (no transformers needed)."""
    _check_hf_expressible(config)
    image, text = config.image, config.text
    vision = {
        "model_type": "groupvit_vision_model",
        "hidden_size": image.embed_dim,
        "intermediate_size": int(image.embed_dim * image.mlp_ratio),
        "depths": list(image.depths),
        "num_hidden_layers": sum(image.depths),
        "num_group_tokens": list(image.num_group_tokens),
        # transformers keeps one extra, unused entry for the last stage
        "num_output_groups": [*image.num_output_groups, image.num_output_groups[-1]],
        "num_attention_heads": image.num_heads[0],
        "image_size": image.img_size,
        "patch_size": image.patch_size,
        "num_channels": image.in_chans,
        "hidden_act": "gelu",
        "layer_norm_eps": image.layer_norm_eps,
        "assign_eps": image.assign_eps,
        "assign_mlp_ratio": list(image.assign_mlp_ratio),
    }
    textual = {
        "model_type": "groupvit_text_model",
        "vocab_size": text.vocab_size,
        "hidden_size": text.width,
        "intermediate_size": int(text.width * text.mlp_ratio),
        "num_hidden_layers": text.layers,
        "num_attention_heads": text.heads,
        "max_position_embeddings": text.context_length,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": text.layer_norm_eps,
        "bos_token_id": text.vocab_size - 2,
        "eos_token_id": text.vocab_size - 1,  # annofree pools at the largest id: the last one of the vocabulary
        "pad_token_id": 1,
    }
    return {
        "model_type": "groupvit",
        "architectures": ["GroupViTModel"],
        "dtype": "float32",
        "projection_dim": config.embed_dim,
        "projection_intermediate_dim": config.proj_hidden_dim,
        "logit_scale_init_value": config.logit_scale_init,
        "text_config": textual,
        "vision_config": vision,
    }


def _preprocessor_config(config: GroupViTConfig) -> dict[str, Any]:
    """transformers' image processor settings with the statistics this model was trained with."""
    size = config.image.img_size
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(config.pixel_mean),
        "image_std": list(config.pixel_std),
        "resample": 3,
    }


def _tokenizer_files(config: GroupViTConfig) -> dict[str, Any]:
    """``CLIPTokenizer`` files that give annofree's ids (:mod:`annofree.data.tokenizer`) at the model's context length.

    The vocabulary and merges are annofree's own; padding is id 0 (``"!"``), as annofree and open_clip pad, and
    ``model_max_length`` is the text context length, so ``tokenizer(texts, padding="max_length", truncation=True)``
    gives annofree's rows: start, ids cut to fit, end, zeros. Empty for a model whose text vocabulary is not
    CLIP's 49408 ids (no CLIP tokenizer fits it).
    """
    from annofree.data.tokenizer import END_TOKEN, START_TOKEN, VOCAB_SIZE, get_tokenizer, read_merges

    if config.text.vocab_size != VOCAB_SIZE:
        return {}
    tokenizer = get_tokenizer()
    special = {
        "bos_token": START_TOKEN,
        "eos_token": END_TOKEN,
        "unk_token": END_TOKEN,
        "pad_token": tokenizer.decoder[0],
    }
    merges = "#version: 0.2\n" + "".join(f"{first} {second}\n" for first, second in read_merges(tokenizer.vocab_path))
    return {
        "vocab.json": tokenizer.encoder,
        "merges.txt": merges,
        "special_tokens_map.json": special,
        "tokenizer_config.json": {
            "tokenizer_class": "CLIPTokenizer",
            "processor_class": "CLIPProcessor",
            "model_max_length": config.text.context_length,
            "padding_side": "right",
            "truncation_side": "right",
            "clean_up_tokenization_spaces": False,
            # "!" would otherwise be matched as the special pad token wherever a text has one.
            "split_special_tokens": True,
            **special,
        },
    }


def save_hf_checkpoint(model, directory: str | Path) -> Path:
    """Write a directory that ``transformers.GroupViTModel.from_pretrained`` loads: config.json, model.safetensors,
    preprocessor_config.json (with the model's own pixel statistics) and, for a model with CLIP's vocabulary, the
    tokenizer files with which ``CLIPTokenizer`` and ``AutoProcessor`` give annofree's token ids
    (:func:`_tokenizer_files`). Written without importing transformers.
    """
    import json

    from safetensors.torch import save_file

    from annofree.io import atomic_write

    hf_config = config_to_hf(model.config)
    hf_config[ANNOFREE_KEY] = {
        "config": model.config.to_dict(),
        "multi_label_logit_scale": float(model.multi_label_logit_scale.detach()),
    }
    state = {name: t.contiguous() for name, t in state_dict_to_hf(model.state_dict()).items()}
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    files = {
        "config.json": hf_config,
        "preprocessor_config.json": _preprocessor_config(model.config),
        **_tokenizer_files(model.config),
    }
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False) + "\n"
        atomic_write(directory / name, lambda tmp, t=text: Path(tmp).write_text(t, encoding="utf-8"))
    return directory


__all__ = [
    "config_from_hf",
    "config_to_hf",
    "from_hf_model",
    "load_hf_checkpoint",
    "save_hf_checkpoint",
    "state_dict_from_hf",
    "state_dict_to_hf",
]
