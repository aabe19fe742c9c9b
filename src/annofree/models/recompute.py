"""Gradient checkpointing of the encoders' blocks (``model.grad_checkpointing``, ``GroupViT.set_grad_checkpointing``).

A checkpointed block keeps only its inputs for the backward pass and runs its forward again there, so a
training step holds the activations of one block at a time instead of every block's: less memory for
about one more forward pass of compute. The random state of the first run is restored for the second
(``torch.utils.checkpoint``'s ``preserve_rng_state``), so Gumbel noise, dropout and drop path draw the same
numbers and the gradients are those of the plain forward.

A module that loops over blocks keeps a ``grad_checkpointing`` attribute (False by default) and calls each
block through :func:`run_block`. Only a training forward with gradients on is checkpointed: inference, eval
mode and ``torch.no_grad`` run the blocks as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, *inputs: Any, enabled: bool) -> Any:
    """``block(*inputs)``, checkpointed when ``enabled`` and the block trains with gradients on."""
    if enabled and block.training and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> None:
    """Switch checkpointing on (or off) in every block loop inside ``model``."""
    for module in model.modules():
        if hasattr(module, "grad_checkpointing"):
            module.grad_checkpointing = enabled
