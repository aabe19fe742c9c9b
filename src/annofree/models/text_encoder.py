"""CLIP-style causal text transformer (parameter names as in the official GroupViT/CLIP code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from annofree.errors import UserError
from annofree.models.config import TextEncoderConfig
from annofree.models.layers import attention
from annofree.models.recompute import run_block


def check_token_length(length: int, context_length: int) -> None:
    """A one-line ``UserError`` saying how to tokenize when ids are longer than the model's context."""
    if length > context_length:
        raise UserError(
            f"token ids have length {length}, above this model's context length {context_length}: tokenize with "
            f"model.tokenize(texts), which fits the model "
            f"(or annofree.tokenize(texts, context_length={context_length}))"
        )


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
    """Fused-projection causal attention (names as ``nn.MultiheadAttention``: in_proj_*, out_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # see SelfAttention
        out = attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The residual blocks in turn; with ``grad_checkpointing`` each is recomputed in the backward pass."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            ResidualBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.layer_norm_eps) for _ in range(cfg.layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = run_block(block, x, enabled=self.grad_checkpointing)
        return x


class TextEncoder(nn.Module):
    """Token ids ``[B, L]`` (L <= context_length) -> features ``[B, width]`` at the end-of-text token.

    The end-of-text id is the largest in CLIP's vocabulary, so ``argmax`` over the ids finds it whatever
    the padding id; with causal attention the pooled feature does not depend on the padding, so the positions
    after the batch's longest text are not computed, and a text that occurs several times in a batch is
    encoded once (both change the result by float rounding only).
    """

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg)
        self.ln_final = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.reset_parameters()

    @property
    def width(self) -> int:
        return self.cfg.width

    def reset_parameters(self) -> None:
        width, layers = self.cfg.width, self.cfg.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        check_token_length(token_ids.shape[-1], self.cfg.context_length)
        if shapes_may_follow_values():
            # Texts repeat within a batch (a caption standing in for missing nouns, the same prompt for two
            # images): each distinct row is encoded once; the indexing below copies its feature to every
            # occurrence and sums their gradients.
            distinct, inverse = torch.unique(token_ids, dim=0, return_inverse=True)
            if distinct.shape[0] < token_ids.shape[0]:
                return self.encode_rows(distinct)[inverse]
        return self.encode_rows(token_ids)

    def encode_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids -> ``[B, width]``: the final LayerNorm of each row's end-of-text feature.

        Attention is causal, so the feature at position ``p`` reads positions ``<= p`` only: the positions after
        the batch's longest text change nothing that is pooled and are not computed (captions and prompts are
        mostly far shorter than the context, so this is most of the text encoder's work).
        """
        end = token_ids.argmax(dim=-1)
        if token_ids.shape[0] and shapes_may_follow_values():
            token_ids = token_ids[:, : int(end.max()) + 1]
        x = self.token_embedding(token_ids) + self.positional_embedding[: token_ids.shape[-1]]
        x = self.transformer(x)
        return self.ln_final(x[torch.arange(x.shape[0], device=x.device), end])


def shapes_may_follow_values() -> bool:
    """False while tracing (ONNX export) or compiling: their graphs must not depend on the values of the ids."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())
