"""Model configurations as typed dataclasses (built from the ``model`` section of a YAML config).

Each is a frozen :class:`~annofree.sections.Section`: ``GroupViTConfig.from_dict(section)`` checks every key, type
and range and the model's own rules (one entry per stage, heads that divide the width, a patch that divides the
image, ...); each failure is a one-line :class:`~annofree.sections.ConfigError` naming the key
(``model.image.num_heads``), raised before any module is built. Building a config in code runs the same rules;
change one with :func:`dataclasses.replace`.

>>> GroupViTConfig.from_dict({"image": {"embed_dim": 100}})
Traceback (most recent call last):
annofree.sections.ConfigError: config key model.image.num_heads: must be divisors of embed_dim 100, got (6, 6, 6)
>>> GroupViTConfig.from_dict({"text": {"layers": 2}}).text.layers
2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from annofree.sections import Section, require, spec

STEMS = ("patch", "conv", "cnn")

# The official GroupingBlock builds its pre-assign cross-attention block with mlp_ratio=4 whatever the config.
OFFICIAL_PRE_ASSIGN_MLP_RATIO = 4.0


def mlp_ratio_for(width: int, hidden: int) -> float:
    """The ratio that gives an MLP of exactly ``hidden`` units as ``int(width * ratio)``, as the models size them.

    ``hidden / width`` when that rounds back exactly (4.0, 2.5, ...); otherwise half a unit more, which floating
    point cannot round down below ``hidden`` (``int(56 * (61 / 56))`` is 60, ``int(56 * (61.5 / 56))`` is 61).
    """
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else (hidden + 0.5) / width


@dataclass(frozen=True)
class ImageEncoderConfig(Section, key="model.image"):
    """GroupViT image encoder; defaults are the reference's gcc_yfcc model."""

    img_size: int = spec(224, gt=0)
    patch_size: int = spec(16, gt=0)
    in_chans: int = spec(3, gt=0)
    # "patch": the paper's linear patch projection; "conv" / "cnn": conv stems (image_encoder.py)
    stem: Literal["patch", "conv", "cnn"] = "patch"
    embed_dim: int = spec(384, gt=0)
    depths: tuple[int, ...] = spec((6, 3, 3), ge=0)  # 0: a stage of grouping only
    num_heads: tuple[int, ...] = spec((6, 6, 6), gt=0)
    num_group_tokens: tuple[int, ...] = spec((64, 8, 0), ge=0)
    num_output_groups: tuple[int, ...] = spec((64, 8), gt=0)
    mlp_ratio: float = spec(4.0, gt=0)  # the transformer blocks' MLP width, x embed_dim
    assign_mlp_ratio: tuple[float, float] = spec((0.5, 4.0), gt=0)
    # The MLP of the cross-attention block before each assignment, x embed_dim. transformers sizes it by its one
    # intermediate_size, the blocks' width; the official code fixes it at 4.
    pre_assign_mlp_ratio: float = spec(OFFICIAL_PRE_ASSIGN_MLP_RATIO, gt=0)
    qkv_bias: bool = True
    drop_path_rate: float = spec(0.1, ge=0, lt=1)
    attn_drop_rate: float = spec(0.0, ge=0, lt=1)
    hard_assignment: bool = True
    gumbel: bool = True  # Gumbel noise on the assignment in training (the reference's `gumbel`); off: plain argmax
    gumbel_tau: float = spec(1.0, gt=0)
    assign_eps: float = spec(1.0, ge=0)
    # The paper adds each group token to the mean of the image tokens assigned to it. Off, a segment token is
    # made of its own image tokens only, so it cannot carry what the group token saw elsewhere in the image
    # (docs/learning.md, "the groups cannot be named").
    group_residual: bool = True
    layer_norm_eps: float = spec(1e-5, gt=0)

    def __post_init__(self):
        for name in ("depths", "num_heads", "num_group_tokens", "num_output_groups", "assign_mlp_ratio"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists given in code
        stages = len(self.depths)
        require(stages >= 1, "depths", "one entry (blocks) per stage", self.depths)
        for name in ("num_heads", "num_group_tokens"):
            require(len(getattr(self, name)) == stages, name, f"one entry per stage ({stages}, as depths)",
                    getattr(self, name))  # fmt: skip
        # transformers' configs carry one extra, unused entry for the last stage.
        require(len(self.num_output_groups) >= stages - 1, "num_output_groups",
                f"one entry per grouping stage ({stages - 1}, stages - 1)", self.num_output_groups)  # fmt: skip
        object.__setattr__(self, "num_output_groups", self.num_output_groups[: stages - 1])
        require(self.stem in STEMS, "stem", " | ".join(STEMS), self.stem)
        require(all(t > 0 for t in self.num_group_tokens[: stages - 1]), "num_group_tokens",
                "> 0 for every stage but the last (its group tokens are what it groups into)",
                self.num_group_tokens)  # fmt: skip
        bad = [h for h in self.num_heads if self.embed_dim % h]
        require(not bad, "num_heads", f"divisors of embed_dim {self.embed_dim}", self.num_heads)
        require(self.img_size % self.patch_size == 0, "patch_size", f"a divisor of img_size {self.img_size}",
                self.patch_size)  # fmt: skip
        power_of_two = self.patch_size >= 2 and self.patch_size & (self.patch_size - 1) == 0
        require(self.stem == "patch" or power_of_two, "patch_size",
                f"a power-of-two patch_size >= 2 for stem {self.stem!r}", self.patch_size)  # fmt: skip


@dataclass(frozen=True)
class TextEncoderConfig(Section, key="model.text"):
    """CLIP-style causal text transformer; defaults are the reference's (12 layers, width 256)."""

    context_length: int = spec(77, gt=0)
    vocab_size: int = spec(49408, gt=0)
    width: int = spec(256, gt=0)
    layers: int = spec(12, gt=0)
    heads: int = spec(4, gt=0)
    mlp_ratio: float = spec(4.0, gt=0)
    layer_norm_eps: float = spec(1e-5, gt=0)

    def __post_init__(self):
        require(self.width % self.heads == 0, "heads", f"a divisor of width {self.width}", self.heads)


@dataclass(frozen=True)
class GroupViTConfig(Section, key="model"):
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = spec(256, gt=0)  # shared image-text space
    proj_hidden_dim: int = spec(4096, gt=0)
    logit_scale_init: float = math.log(1 / 0.07)
    # Normalisation applied to pixels before the encoder; ImageNet statistics as in the reference.
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = spec((0.229, 0.224, 0.225), gt=0)

    def __post_init__(self):
        # Dicts and lists given in code (from_dict has converted them already).
        if isinstance(self.image, dict):
            object.__setattr__(self, "image", ImageEncoderConfig.from_dict(self.image, "image"))
        if isinstance(self.text, dict):
            object.__setattr__(self, "text", TextEncoderConfig.from_dict(self.text, "text"))
        object.__setattr__(self, "pixel_mean", tuple(self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(self.pixel_std))
