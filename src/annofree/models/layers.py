"""Transformer building blocks shared by the image and text encoders.

Attention runs through PyTorch's fused ``scaled_dot_product_attention`` (:func:`attention`); parameter names
follow the official GroupViT code (``attn.qkv``, ``attn.proj``, ``mlp.fc1`` ...) so that its checkpoints map by name.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Two linear layers with an activation between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = act()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenMixingMlp(Mlp):
    """An MLP applied along the token axis: ``[B, S_in, C] -> [B, S_out, C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (torch's own probe; a torch without it counts as none)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0, is_causal: bool = False
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``[B, H, N, D]``: PyTorch's fused kernel, except for bf16 on a CPU
    without AMX, where that kernel multiplies its blocks one small gemm at a time and ran 3-5x slower (forward
    and backward, AMD EPYC with avx512_bf16, torch 2.13) than the same attention as two bf16 matmuls and a softmax.
    The matmul form rounds the scores to bf16, where the fused kernel keeps them in fp32: on the whole image
    encoder that changed neither the error of the output nor that of the gradients (against fp64) beyond bf16's
    own (docs/profile.md).
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and not cpu_has_amx():
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if is_causal:
            future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = scores.softmax(dim=-1)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        return weights @ v
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # unbind, not qkv[0], qkv[1], qkv[2]: the backward of three selects zero-fills and adds three tensors of
        # qkv's full size; unbind's backward is one stack.
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        out = attention(q, k, v, dropout_p=drop)
        return self.proj(_merge_heads(out))


class CrossAttention(nn.Module):
    """Multi-head attention from queries to a separate key/value sequence."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.q_proj(query), self.num_heads)
        k = _split_heads(self.k_proj(key), self.num_heads)
        v = _split_heads(self.v_proj(key), self.num_heads)
        return self.proj(_merge_heads(attention(q, k, v)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttentionBlock(nn.Module):
    """Post-norm cross-attention block used before assignment: queries attend to image tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-5):
        super().__init__()
        self.attn = CrossAttention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim, eps=eps)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)


def init_vit_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated-normal linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
