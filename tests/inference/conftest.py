"""Fixtures for the inference tests: a tiny real GroupViT and a stand-in tokenizer."""

from __future__ import annotations

import pytest
import torch

from annofree.models import GroupViT, GroupViTConfig, ImageEncoderConfig, TextEncoderConfig


def word_tokenizer(texts, context_length=77):
    """Deterministic stand-in for the BPE tokenizer: one id per distinct word, end-of-text = vocab - 1."""
    rows = []
    for text in texts:
        ids = [1 + sum(map(ord, word)) % 90 for word in text.lower().split()][: context_length - 1]
        ids.append(99)
        rows.append(ids + [0] * (context_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@pytest.fixture
def tiny_groupvit() -> GroupViT:
    torch.manual_seed(0)
    config = GroupViTConfig(
        image=ImageEncoderConfig(
            img_size=32,
            patch_size=4,
            embed_dim=32,
            depths=(1, 1, 1),
            num_heads=(2, 2, 2),
            num_group_tokens=(8, 4, 0),
            num_output_groups=(8, 4),
        ),
        text=TextEncoderConfig(context_length=16, vocab_size=100, width=32, layers=1, heads=2),
        embed_dim=16,
        proj_hidden_dim=32,
    )
    return GroupViT(config).eval()


@pytest.fixture
def tokenizer():
    return word_tokenizer
