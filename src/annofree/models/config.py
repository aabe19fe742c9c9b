"""Model configurations as plain dataclasses (built from the ``model`` section of a YAML config)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ImageEncoderConfig:
    """GroupViT image encoder; defaults are the reference's gcc_yfcc model."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    stem: str = "patch"  # "patch": the paper's linear patch projection; "conv" / "cnn": conv stems (image_encoder.py)
    embed_dim: int = 384
    depths: tuple[int, ...] = (6, 3, 3)
    num_heads: tuple[int, ...] = (6, 6, 6)
    num_group_tokens: tuple[int, ...] = (64, 8, 0)
    num_output_groups: tuple[int, ...] = (64, 8)
    mlp_ratio: float = 4.0
    assign_mlp_ratio: tuple[float, float] = (0.5, 4.0)
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    attn_drop_rate: float = 0.0
    hard_assignment: bool = True
    gumbel: bool = True  # Gumbel noise on the assignment in training (the reference's `gumbel`); off: plain argmax
    gumbel_tau: float = 1.0
    assign_eps: float = 1.0
    # The paper adds each group token to the mean of the image tokens assigned to it. Off, a segment token is
    # made of its own image tokens only, so it cannot carry what the group token saw elsewhere in the image
    # (docs/learning.md, "the groups cannot be named").
    group_residual: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        self.depths = tuple(self.depths)
        self.num_heads = tuple(self.num_heads)
        self.num_group_tokens = tuple(self.num_group_tokens)
        self.num_output_groups = tuple(self.num_output_groups)
        self.assign_mlp_ratio = tuple(self.assign_mlp_ratio)
        stages = len(self.depths)
        if not (len(self.num_heads) == len(self.num_group_tokens) == stages):
            raise ValueError("depths, num_heads and num_group_tokens need one entry per stage")
        if len(self.num_output_groups) < stages - 1:
            raise ValueError("num_output_groups needs one entry per grouping stage (stages - 1)")
        # transformers' configs carry one extra, unused entry for the last stage.
        self.num_output_groups = self.num_output_groups[: stages - 1]
        if self.stem not in ("patch", "conv", "cnn"):
            raise ValueError(f"stem must be 'patch', 'conv' or 'cnn', got {self.stem!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")


@dataclass
class TextEncoderConfig:
    """CLIP-style causal text transformer; defaults are the reference's (12 layers, width 256)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 256
    layers: int = 12
    heads: int = 4
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5


@dataclass
class GroupViTConfig:
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 256  # shared image-text space
    proj_hidden_dim: int = 4096
    logit_scale_init: float = math.log(1 / 0.07)
    # Normalisation applied to pixels before the encoder; ImageNet statistics as in the reference.
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self):
        if isinstance(self.image, dict):
            self.image = _from_dict(ImageEncoderConfig, self.image)
        if isinstance(self.text, dict):
            self.text = _from_dict(TextEncoderConfig, self.text)
        self.pixel_mean = tuple(self.pixel_mean)
        self.pixel_std = tuple(self.pixel_std)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupViTConfig:
        return _from_dict(cls, d)


def _from_dict(cls, d: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**d)


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
