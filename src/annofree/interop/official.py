"""The official NVlabs/GroupViT checkpoint format, both ways.

A released file is ``torch.save({"model": state_dict, ...})``; the other entries (optimizer, scheduler,
epoch, an OmegaConf config, metrics) are not needed to rebuild the model. annofree's parameter names are
the official ones, so conversion differs in three places only:

- the projection heads are 1x1 ``Conv1d`` layers officially (weights ``[out, in, 1]``), ``Linear`` here;
- a state dict saved from a DDP-wrapped model has a ``module.`` prefix;
- the file carries no model config that can be read without running code, so the config is read off the
  tensor shapes. Attention heads leave no trace in the weights: the image encoder's come from the
  training config pickled beside them (``config.model.img_encoder.num_heads``, an OmegaConf object read
  as inert data), else ``width // 64`` as in both released models; the official text encoder always has
  ``width // 64``. Files written by annofree also keep the full config
  as a plain dict under ``annofree_config`` (the official loader ignores extra keys), so a round trip
  rebuilds exactly the model it started from.

Some keys exist only under a switch of the official config; a file without them still converts:

- ``multi_label_logit_scale`` is created only with ``multi_label > 0`` and ``share_temperature: false``. The
  RedCaps release trains with ``multi_label: 0`` and has none. The converted model gets the value the official
  code would give it: ``logit_scale`` where the config shares the temperature, else the official initial value
  ``log(1 / contrast_temperature)`` (what an official fine-tune from the file starts from: its loader is
  not strict). Nothing else reads it; an official export of the model carries it, which the official loader
  ignores when it runs without multi-label loss.
- the transformer blocks' qkv bias follows ``qkv_bias`` (default true): read off the file.
- switches that change the computation in ways annofree's GroupViT does not implement (``proj_num_layers`` other
  than 2, ``patch_norm: false``, ``embed_factors`` other than 1, ``num_classes > 0``) are named in the error.

Files are read with :func:`annofree.interop.safe_load.load_pth`: nothing in them is executed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from annofree.errors import UserError
from annofree.models.config import (
    OFFICIAL_PRE_ASSIGN_MLP_RATIO,
    GroupViTConfig,
    ImageEncoderConfig,
    TextEncoderConfig,
    mlp_ratio_for,
)

_CONV1D = re.compile(r"^(img|text)_projector\.(linear_hidden\.0|linear_out)\.weight$")
CONFIG_KEY = "annofree_config"
_HEAD_WIDTH = 64  # official text encoder: heads = width // 64; the released image encoders match it
_CONTRAST_TEMPERATURE = 0.07  # the official MultiLabelContrastive's default, and both releases' value
_MULTI_LABEL_SCALE = "multi_label_logit_scale"
# Keys that betray an official config switch annofree's GroupViT does not implement: (regex, key present?, why).
_UNSUPPORTED_SWITCHES = [
    (r"^img_projector\.linear_out\.", False, "no projection heads (proj_num_layers: 0)"),
    (r"^img_projector\.linear_hidden\.0\.", False, "projection heads with one layer (proj_num_layers: 1)"),
    (r"^img_projector\.linear_hidden\.3\.", True, "projection heads with more than two layers (proj_num_layers > 2)"),
    (r"^img_encoder\.patch_embed\.norm\.", False, "no patch LayerNorm (patch_norm: false)"),
    (r"^img_encoder\.layers\.\d+\.downsample\.reduction\.", True, "stage widths that change (embed_factors)"),
    (r"^img_encoder\.head\.", True, "a classification head (num_classes > 0)"),
]


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(name.startswith("module.") for name in state):
        return {name[len("module.") :]: tensor for name, tensor in state.items()}
    return dict(state)


def state_dict_from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names and shapes -> annofree's (Conv1d kernels squeezed, DDP prefix dropped)."""
    out = {}
    for name, tensor in _strip_prefix(state).items():
        if _CONV1D.match(name):
            if tensor.ndim != 3 or tensor.shape[-1] != 1:
                raise ValueError(f"{name}: expected a 1x1 Conv1d weight [out, in, 1], got {tuple(tensor.shape)}")
            tensor = tensor[..., 0]
        out[name] = tensor
    return out


def state_dict_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """annofree's state dict -> the official one (projection weights as 1x1 Conv1d kernels)."""
    return {
        name: (tensor.unsqueeze(-1) if _CONV1D.match(name) else tensor).detach().clone()
        for name, tensor in state.items()
    }


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for name in state if (m := regex.match(name))})


def _image_config(state: dict[str, torch.Tensor], heads: list[int] | None = None) -> ImageEncoderConfig:
    pos, proj = state["img_encoder.pos_embed"], state["img_encoder.patch_embed.proj.weight"]
    width, patch = proj.shape[0], proj.shape[-1]
    grid = round(pos.shape[1] ** 0.5)
    if grid * grid != pos.shape[1]:
        raise ValueError(f"img_encoder.pos_embed has {pos.shape[1]} positions, not a square grid")
    stages = _count(state, r"^img_encoder\.layers\.(\d+)\.")
    depths = [_count(state, rf"^img_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
    group_tokens = [
        state[f"img_encoder.layers.{i}.group_token"].shape[1] if f"img_encoder.layers.{i}.group_token" in state else 0
        for i in range(stages)
    ]
    output_groups = [
        state[f"img_encoder.layers.{i}.downsample.mlp_inter.fc2.weight"].shape[0] for i in range(stages - 1)
    ]
    token_hidden = state["img_encoder.layers.0.downsample.mlp_inter.fc1.weight"].shape[0]
    channel_hidden = state["img_encoder.layers.0.downsample.mlp_channels.fc1.weight"].shape[0]
    return ImageEncoderConfig(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=proj.shape[1],
        embed_dim=width,
        depths=tuple(depths),
        num_heads=tuple(heads) if heads else (max(1, width // _HEAD_WIDTH),) * stages,
        num_group_tokens=tuple(group_tokens),
        num_output_groups=tuple(output_groups),
        mlp_ratio=mlp_ratio_for(width, _block_mlp_width(state, width)),
        assign_mlp_ratio=(mlp_ratio_for(width, token_hidden), mlp_ratio_for(width, channel_hidden)),
        pre_assign_mlp_ratio=mlp_ratio_for(
            width, state["img_encoder.layers.0.downsample.pre_assign_attn.mlp.fc1.weight"].shape[0]
        ),
        qkv_bias=_has_qkv_bias(state),
    )


def _block_mlp_width(state: dict[str, torch.Tensor], width: int) -> int:
    """The transformer blocks' MLP width (4 x width, the official default, in a model without blocks)."""
    name = next((n for n in state if re.match(r"^img_encoder\.layers\.\d+\.blocks\.\d+\.mlp\.fc1\.weight$", n)), None)
    return state[name].shape[0] if name else 4 * width


def _has_qkv_bias(state: dict[str, torch.Tensor]) -> bool:
    """The official ``qkv_bias`` switch (default true) leaves a bias beside every block's fused qkv, or none."""
    blocks = [n[: -len(".weight")] for n in state if re.match(r"^img_encoder\..*\.attn\.qkv\.weight$", n)]
    return not blocks or f"{blocks[0]}.bias" in state


def _text_config(state: dict[str, torch.Tensor]) -> TextEncoderConfig:
    tokens, positions = state["text_encoder.token_embedding.weight"], state["text_encoder.positional_embedding"]
    width = tokens.shape[1]
    return TextEncoderConfig(
        context_length=positions.shape[0],
        vocab_size=tokens.shape[0],
        width=width,
        layers=_count(state, r"^text_encoder\.transformer\.resblocks\.(\d+)\."),
        heads=max(1, width // _HEAD_WIDTH),
        mlp_ratio=mlp_ratio_for(width, state["text_encoder.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
    )


def config_from_official(
    state: dict[str, torch.Tensor], image_heads: list[int] | None = None, contrast_temperature: float | None = None
) -> GroupViTConfig:
    """The model config implied by an (annofree-named) official state dict's shapes (and the image heads)."""
    _check_switches(state)
    try:
        return GroupViTConfig(
            image=_image_config(state, image_heads),
            text=_text_config(state),
            embed_dim=state["img_projector.linear_out.weight"].shape[0],
            proj_hidden_dim=state["img_projector.linear_hidden.0.weight"].shape[0],
            logit_scale_init=math.log(1 / (contrast_temperature or _CONTRAST_TEMPERATURE)),
        )
    except KeyError as exc:
        raise ValueError(f"not a GroupViT state dict: no {exc.args[0]}") from None


def _check_switches(state: dict[str, torch.Tensor]) -> None:
    if not any(name.startswith("img_encoder.") for name in state):
        return  # not a GroupViT at all: config_from_official names the first missing key
    for pattern, present, what in _UNSUPPORTED_SWITCHES:
        if any(re.match(pattern, name) for name in state) == present:
            raise ValueError(f"the official model was configured with {what}, which annofree's GroupViT does not have")


def from_official_state(
    state: dict[str, torch.Tensor],
    config: dict | None = None,
    image_heads: list[int] | None = None,
    settings: dict | None = None,
):
    """An official ``state_dict`` -> an annofree ``GroupViT`` in eval mode (``ValueError`` on mismatch).

    ``config`` (an annofree config dict) is used when given; otherwise it is read off the shapes.
    ``settings``: the official ``model`` config section, where the file has one (``contrast_temperature``,
    ``share_temperature``); keys the official code creates only under a switch get the value it would use.
    """
    from annofree.models import GroupViT

    settings = settings or {}
    temperature = _number(settings.get("contrast_temperature"))
    state = state_dict_from_official(state)
    model = GroupViT(
        GroupViTConfig.from_dict(config) if config else config_from_official(state, image_heads, temperature)
    )
    if _MULTI_LABEL_SCALE not in state:
        shared = settings.get("share_temperature") is True and "logit_scale" in state
        state[_MULTI_LABEL_SCALE] = state["logit_scale"].clone() if shared else model.multi_label_logit_scale.detach()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.eval()


def load_official_checkpoint(path: str | Path):
    """Read an official GroupViT ``.pth`` file safely and convert it; every failure is a ``UserError``."""
    from annofree.interop.safe_load import load_pth

    checkpoint = load_pth(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise UserError(f"{path}: not an official GroupViT checkpoint (expected {{'model': state_dict, ...}})")
    config = checkpoint.get(CONFIG_KEY)
    settings = _official_model_settings(checkpoint)
    try:
        return from_official_state(
            state, config if isinstance(config, dict) else None, _official_heads(settings), settings
        )
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"{path}: cannot convert this GroupViT checkpoint ({str(exc).splitlines()[0]})") from None


def _official_model_settings(checkpoint: dict) -> dict:
    """The ``model`` section of the pickled training config as plain data ({} when there is none).

    Interpolations such as the RedCaps config's ``multi_label: ${data.text_aug.multi_label}`` stay strings.
    """
    from annofree.interop.safe_load import plain_data

    config = plain_data(checkpoint.get("config"))
    model = config.get("model") if isinstance(config, dict) else None
    return model if isinstance(model, dict) else {}


def _official_heads(settings: dict) -> list[int] | None:
    """``config.model.img_encoder.num_heads`` of the pickled training config, when there is one."""
    encoder = settings.get("img_encoder")
    heads = encoder.get("num_heads") if isinstance(encoder, dict) else None
    return [int(h) for h in heads] if isinstance(heads, list) and heads else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def save_official_checkpoint(model, path: str | Path) -> Path:
    """Write ``{"model": state_dict}`` with the official names and shapes, atomically.

    The official ``load_checkpoint`` reads ``checkpoint["model"]`` and needs nothing else for evaluation.
    A model the official code would run differently (annofree's conv stems, soft assignment, segments without
    the group query) is refused.
    """
    from annofree.io import atomic_write

    _check_official(model.config.image)
    checkpoint = {"model": state_dict_to_official(model.state_dict()), CONFIG_KEY: model.config.to_dict()}
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
    return path


def _check_official(image: ImageEncoderConfig) -> None:
    if image.stem != "patch":
        raise UserError(f"the official GroupViT has no {image.stem!r} stem; only 'patch' models convert")
    if not image.hard_assignment:
        raise UserError("the official GroupViT always assigns hard; a soft-assignment model would run differently")
    if not image.group_residual:
        raise UserError("the official GroupViT always adds the group query to its segment; this model does not")
    if image.pre_assign_mlp_ratio != OFFICIAL_PRE_ASSIGN_MLP_RATIO:
        raise UserError(
            f"the official GroupViT fixes the pre-assign MLP at {OFFICIAL_PRE_ASSIGN_MLP_RATIO} x width; this model "
            f"has {image.pre_assign_mlp_ratio} x"
        )


__all__ = [
    "config_from_official",
    "from_official_state",
    "load_official_checkpoint",
    "save_official_checkpoint",
    "state_dict_from_official",
    "state_dict_to_official",
]
