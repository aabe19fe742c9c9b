"""Fixtures for the inference tests: a tiny real GroupViT and a stand-in tokenizer."""

from __future__ import annotations

import pytest
import torch

from annofree.models import GroupViT
from tests.tiny import tiny_groupvit as tiny_model


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
    return tiny_model(vocab_size=100).eval()


@pytest.fixture
def tokenizer():
    return word_tokenizer
