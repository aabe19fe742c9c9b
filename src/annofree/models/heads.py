"""Projection heads into the shared image-text embedding space."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear, on ``[B, C]`` or on token sets ``[B, L, C]``.

    The official code writes the linears as 1x1 Conv1d (same maths); BatchNorm statistics are taken over
    all vectors of the batch (and tokens), as there.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.linear_hidden = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)
        )
        self.linear_out = nn.Linear(hidden_dim, out_dim)
        for linear in (self.linear_hidden[0], self.linear_out):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = self.linear_out(self.linear_hidden(x.reshape(-1, shape[-1])))
        return x.reshape(*shape[:-1], x.shape[-1])
