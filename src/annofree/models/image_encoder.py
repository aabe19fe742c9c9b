"""GroupViT image encoder: patch tokens grouped into segment tokens stage by stage."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from annofree.models.config import ImageEncoderConfig
from annofree.models.grouping import GroupingBlock, group_projector
from annofree.models.layers import Block, init_vit_weights
from annofree.models.recompute import run_block


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return normed_tokens(self.proj(x), self.norm)


def normed_tokens(features: torch.Tensor, norm: nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
    """A feature map ``[B, C, h, w]`` -> LayerNorm-ed tokens ``[B, h*w, C]`` and the grid ``(h, w)``."""
    return norm(features.flatten(2).transpose(1, 2)), (features.shape[2], features.shape[3])


def halvings(patch_size: int, stem: str) -> int:
    """How many stride-2 layers make ``patch_size``; conv stems need a power of two >= 2."""
    steps = patch_size.bit_length() - 1
    if patch_size < 2 or 2**steps != patch_size:
        raise ValueError(f"stem {stem!r} needs a power-of-two patch_size >= 2, got {patch_size}")
    return steps


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ConvStem(nn.Module):
    """Patch tokens from a few strided 3x3 convolutions instead of one linear patch projection.

    Not in the GroupViT paper: an option for small models trained on little data, where early
    convolutions are reported to make vision transformers train faster (Xiao et al., "Early Convolutions
    Help Transformers See Better", NeurIPS 2021). On our synthetic scenes it did not prevent group
    collapse (docs/learning.md); no recipe uses it yet. One stride-2 convolution per factor 2 of the patch
    size, channels doubling up to dim / 2, then a 1x1 projection to dim.
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int, eps: float):
        super().__init__()
        steps = halvings(patch_size, "conv")
        layers, channels = [], in_chans
        for i in range(steps):
            out = max(dim // 2 ** (steps - i), 16)
            layers += conv_bn_relu(channels, out, 2)
            channels = out
        layers.append(nn.Conv2d(channels, dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim, eps=eps)

    forward = PatchEmbed.forward


class CNNStem(nn.Module):
    """The paper's linear patch projection plus a small VGG-style CNN: local colour and local shape per token.

    Not in the GroupViT paper. The CNN: 3x3 conv + BatchNorm + ReLU layers, one at full size (dim /
    patch_size channels, at least 16), then per factor 2 of the patch size a stride-2 layer doubling the
    channels and one more layer, then two more at the last size, then a 1x1 projection to dim (at patch 4 and
    dim 128: widths 32, 64, 64, 128, 128, 128, 128). Its output is added to the linear projection of the patch,
    whose colours keep an object's inside apart from the background: without it the grouping of a trained
    model merges the inside of objects with the background (docs/learning.md, "the groups cannot be named").
    With no transformer blocks before the grouping (``depths: [0, 0]``), a token sees its neighbourhood only.
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int, eps: float):
        super().__init__()
        steps = halvings(patch_size, "cnn")
        channels = max(dim // patch_size, 16)
        layers = conv_bn_relu(in_chans, channels)
        for _ in range(steps):
            layers += conv_bn_relu(channels, 2 * channels, 2) + conv_bn_relu(2 * channels, 2 * channels)
            channels *= 2
        layers += conv_bn_relu(channels, channels) + conv_bn_relu(channels, channels)
        layers.append(nn.Conv2d(channels, dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.patch = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return normed_tokens(self.proj(x) + self.patch(x), self.norm)


STEMS = {"patch": PatchEmbed, "conv": ConvStem, "cnn": CNNStem}


class GroupingStage(nn.Module):
    """Transformer blocks over [image tokens, group tokens], then a grouping block (if any); with
    ``grad_checkpointing`` each block is recomputed in the backward pass (:mod:`annofree.models.recompute`)."""

    def __init__(self, cfg: ImageEncoderConfig, index: int, drop_path: list[float]):
        super().__init__()
        self.grad_checkpointing = False
        dim, eps = cfg.embed_dim, cfg.layer_norm_eps
        n_group = cfg.num_group_tokens[index]
        self.num_group_tokens = n_group
        prev = cfg.num_group_tokens[index - 1] if index > 0 else 0
        self.group_projector = group_projector(prev, n_group, dim, eps) if prev and n_group else None
        self.group_token = nn.Parameter(torch.zeros(1, n_group, dim)) if n_group else None
        if self.group_token is not None and self.group_projector is None:
            nn.init.trunc_normal_(self.group_token, std=0.02)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads[index], cfg.mlp_ratio, cfg.qkv_bias, p, cfg.attn_drop_rate, eps) for p in drop_path
        )
        self.downsample = None
        if index < len(cfg.depths) - 1:
            self.downsample = GroupingBlock(
                dim,
                cfg.num_heads[index],
                n_group,
                cfg.num_output_groups[index],
                mlp_ratio=cfg.assign_mlp_ratio,
                hard=cfg.hard_assignment,
                gumbel=cfg.hard_assignment and cfg.gumbel,
                tau=cfg.gumbel_tau,
                assign_eps=cfg.assign_eps,
                eps=eps,
                residual=cfg.group_residual,
                pre_assign_mlp_ratio=cfg.pre_assign_mlp_ratio,
            )

    def forward(self, x: torch.Tensor, prev_groups: torch.Tensor | None):
        n = x.shape[1]
        groups = None
        if self.group_token is not None:
            groups = self.group_token.expand(x.shape[0], -1, -1)
            if self.group_projector is not None:
                groups = groups + self.group_projector(prev_groups)
            x = torch.cat([x, groups], dim=1)
        for block in self.blocks:
            x = run_block(block, x, enabled=self.grad_checkpointing)
        groups = x[:, n:] if self.group_token is not None else None
        x = x[:, :n]
        soft = None
        if self.downsample is not None:
            x, soft = run_block(self.downsample, x, groups, enabled=self.grad_checkpointing)
        return x, groups, soft


@dataclass
class ImageEncoderOutput:
    tokens: torch.Tensor  # [B, S_last, C] final segment tokens after the last LayerNorm
    soft_assignments: list[torch.Tensor]  # per grouping stage, [B, S_i, N_i]
    grid: tuple[int, int]  # patch grid of the input (h, w)
    patch_tokens: torch.Tensor | None = None  # [B, N_0, C] the stem's tokens, before the position embedding


class GroupViTImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        eps = cfg.layer_norm_eps
        self.patch_embed = STEMS[cfg.stem](cfg.patch_size, cfg.in_chans, cfg.embed_dim, eps)
        side = cfg.img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, cfg.embed_dim))
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            GroupingStage(cfg, i, rates[s : s + d]) for i, (s, d) in enumerate(zip(starts, cfg.depths, strict=True))
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=eps)
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def width(self) -> int:
        return self.cfg.embed_dim

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The learned position embedding, bicubically resized when the patch grid differs.

        While tracing (ONNX export) the resize is always recorded: the shortcut would freeze the traced
        graph to the example's size, and a resize to the same grid gives the embedding back (up to rounding).
        """
        side = self.cfg.img_size // self.cfg.patch_size
        if grid == (side, side) and not torch.jit.is_tracing():
            return self.pos_embed
        pos = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=grid, mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)

    def forward(self, pixels: torch.Tensor) -> ImageEncoderOutput:
        patch_tokens, grid = self.patch_embed(pixels)
        x = patch_tokens + self.position_embedding(grid)
        groups, soft_maps = None, []
        for layer in self.layers:
            x, groups, soft = layer(x, groups)
            if soft is not None:
                soft_maps.append(soft)
        return ImageEncoderOutput(self.norm(x), soft_maps, grid, patch_tokens)
