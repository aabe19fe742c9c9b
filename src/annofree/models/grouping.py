"""The grouping block: learned group tokens gather image tokens by (Gumbel) hard assignment."""

from __future__ import annotations

import torch
from torch import nn

from annofree.models.config import OFFICIAL_PRE_ASSIGN_MLP_RATIO
from annofree.models.layers import CrossAttentionBlock, Mlp, TokenMixingMlp


def hard_one_hot(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the argmax with a straight-through gradient to ``probs``."""
    index = probs.argmax(dim, keepdim=True)
    hard = torch.zeros_like(probs).scatter_(dim, index, 1.0)
    return hard - probs.detach() + probs


def gumbel_softmax(logits: torch.Tensor, dim: int, tau: float = 1.0, hard: bool = True) -> torch.Tensor:
    """Gumbel-softmax sample along ``dim``; with ``hard`` a one-hot whose gradient is the soft sample's."""
    gumbels = -torch.empty_like(logits).exponential_().log()
    probs = ((logits + gumbels) / tau).softmax(dim)
    return hard_one_hot(probs, dim) if hard else probs


class AssignAttention(nn.Module):
    """Single-head attention in which every image token chooses one group (softmax over groups).

    Returns the pooled group features and the soft assignment ``[B, S, N]`` (groups x image tokens),
    which inference chains across stages into segmentation maps.
    """

    def __init__(self, dim: int, hard: bool = True, gumbel: bool = True, tau: float = 1.0, eps: float = 1.0):
        super().__init__()
        self.scale = dim**-0.5
        self.hard, self.gumbel, self.tau, self.eps = hard, gumbel, tau, eps
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, groups: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.q_proj(groups) @ self.k_proj(tokens).transpose(1, 2) * self.scale  # [B, S, N]
        soft = logits.softmax(dim=1)
        if self.gumbel and self.training:
            assign = gumbel_softmax(logits, dim=1, tau=self.tau, hard=self.hard)
        elif self.hard:
            assign = hard_one_hot(soft, dim=1)
        else:
            assign = soft
        # Average the tokens each group received; eps keeps empty groups finite.
        assign = assign / (assign.sum(dim=2, keepdim=True) + self.eps)
        return self.proj(assign @ self.v_proj(tokens)), soft


class GroupingBlock(nn.Module):
    """Merge N image tokens into S_out segment tokens, guided by S_in group tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_group_tokens: int,
        num_output_groups: int,
        mlp_ratio: tuple[float, float] = (0.5, 4.0),
        hard: bool = True,
        gumbel: bool = True,
        tau: float = 1.0,
        assign_eps: float = 1.0,
        eps: float = 1e-5,
        residual: bool = True,
        pre_assign_mlp_ratio: float = OFFICIAL_PRE_ASSIGN_MLP_RATIO,
    ):
        super().__init__()
        self.residual = residual
        tokens_dim, channels_dim = int(mlp_ratio[0] * dim), int(mlp_ratio[1] * dim)
        self.norm_tokens = nn.LayerNorm(dim, eps=eps)
        self.mlp_inter = Mlp(num_group_tokens, tokens_dim, num_output_groups)
        self.norm_post_tokens = nn.LayerNorm(dim, eps=eps)
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.pre_assign_attn = CrossAttentionBlock(dim, num_heads, mlp_ratio=pre_assign_mlp_ratio, eps=eps)
        self.assign = AssignAttention(dim, hard=hard, gumbel=gumbel, tau=tau, eps=assign_eps)
        self.norm_new_x = nn.LayerNorm(dim, eps=eps)
        self.mlp_channels = Mlp(dim, channels_dim, dim)

    def forward(self, x: torch.Tensor, group_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        # Token mixing maps S_in group tokens to S_out queries (the official code's mlp_inter).
        queries = self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2)
        queries = self.pre_assign_attn(self.norm_post_tokens(queries), x)
        new_x, soft = self.assign(queries, x)
        if self.residual:
            new_x = new_x + queries
        return new_x + self.mlp_channels(self.norm_new_x(new_x)), soft


def group_projector(prev_groups: int, groups: int, dim: int, eps: float = 1e-5) -> nn.Sequential:
    """Maps the previous stage's group tokens to this stage's (LayerNorm, then token mixing)."""
    return nn.Sequential(nn.LayerNorm(dim, eps=eps), TokenMixingMlp(prev_groups, dim // 2, groups))


def chain_assignments(soft_maps: list[torch.Tensor]) -> torch.Tensor:
    """Chain per-stage soft assignments ``[B, S_i, N_i]`` into pixel-to-final-group maps ``[B, N_0, S_last]``.

    Stage i's tokens are stage i-1's groups, so the product of the transposed maps gives, for every
    image patch, its weight on each final group.
    """
    out = soft_maps[0].transpose(1, 2)
    for soft in soft_maps[1:]:
        out = out @ soft.transpose(1, 2)
    return out


__all__ = ["AssignAttention", "GroupingBlock", "chain_assignments", "group_projector", "gumbel_softmax"]
