"""AdamW (or SGD with momentum) with the usual weight-decay exclusions, and the per-step warm-up + cosine
learning-rate schedule.

Example:
    >>> from torch import nn
    >>> model = nn.Linear(4, 2)
    >>> [len(g["params"]) for g in param_groups(model, weight_decay=0.05)]  # weight | bias
    [1, 1]
    >>> round(lr_at(0, lr=1.0, total_steps=10, warmup_steps=2, warmup_lr=0.0, min_lr=0.1), 3)
    0.0
    >>> round(lr_at(2, lr=1.0, total_steps=10, warmup_steps=2, warmup_lr=0.0, min_lr=0.1), 3)
    1.0
    >>> round(lr_at(10, lr=1.0, total_steps=10, warmup_steps=2, warmup_lr=0.0, min_lr=0.1), 3)
    0.1
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from annofree.engine.config import OptimSection


def decays(name: str, param: torch.Tensor, no_weight_decay: Iterable[str] = ()) -> bool:
    """Whether weight decay applies: not to 1-D parameters (norms, scales), biases or the named ones."""
    return param.ndim > 1 and not name.endswith("bias") and name not in set(no_weight_decay)


def param_groups(
    model: nn.Module, weight_decay: float, no_weight_decay: Iterable[str] = (), decay_all: bool = False
) -> list[dict[str, Any]]:
    """Two optimiser groups over the trainable parameters: with weight decay and without.

    ``no_weight_decay`` names parameters as ``model.named_parameters()`` does; an unknown name is an
    error, since a typo would otherwise silently decay a parameter that should not be. ``decay_all`` decays
    every parameter (norms, biases and named ones too), as SimSiam and the DenseSiam release do.
    """
    skip = set(no_weight_decay)
    named = dict(model.named_parameters())
    unknown = skip - set(named)
    if unknown:
        raise ValueError(f"no_weight_decay names parameters that do not exist: {', '.join(sorted(unknown))}")
    decay, no_decay = [], []
    for name, param in named.items():
        if param.requires_grad:
            (decay if decay_all or decays(name, param, skip) else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, optim: OptimSection, lr: float, no_weight_decay: Iterable[str] = ()):
    """``optim.name`` (AdamW, or SGD with momentum) over ``param_groups`` at ``lr`` (the schedule then sets each
    step's rate)."""
    groups = param_groups(model, optim.weight_decay, no_weight_decay, decay_all=optim.decay_all)
    if not groups:
        raise ValueError("the method has no trainable parameters")
    if optim.name == "sgd":  # not fused: torch 2.13's fused SGD failed in DenseSiam's training (a None gradient)
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=optim.betas, eps=optim.eps, fused=fusable(groups))


def fusable(groups: list[dict[str, Any]]) -> bool | None:
    """True (PyTorch's fused AdamW step, one kernel over all parameters) where every parameter is a float on the
    CPU or a CUDA device; None (PyTorch's default) elsewhere. On the CPU the default loops over the parameters in
    Python, a dozen small ops each: GroupViT's AdamW step took 108 ms there against 33 ms fused (1 thread,
    docs/profile.md), the same update up to float rounding."""
    params = [p for group in groups for p in group["params"]]
    return True if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) else None


def lr_at(step: int, *, lr: float, total_steps: int, warmup_steps: int, warmup_lr: float, min_lr: float) -> float:
    """The learning rate of optimiser step ``step`` (0-based).

    Linear from ``warmup_lr`` (step 0) to ``lr`` (step ``warmup_steps``), then a half cosine from ``lr``
    down to ``min_lr``, reached at ``total_steps``.
    """
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets every group's learning rate to :func:`lr_at` of the current step.

    ``step()`` is called after each optimiser step; the state is the number of steps taken, so a
    resumed run continues on exactly the same curve.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_lr: float = 0.0,
        min_lr: float = 0.0,
    ):
        self.optimizer = optimizer
        self.curve = {
            "lr": lr,
            "total_steps": total_steps,
            "warmup_steps": warmup_steps,
            "warmup_lr": warmup_lr,
            "min_lr": min_lr,
        }
        self.steps_taken = 0
        self._apply()

    @property
    def lr(self) -> float:
        """The rate the next optimiser step will use."""
        return lr_at(self.steps_taken, **self.curve)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        self.steps_taken += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_taken = int(state["steps_taken"])
        self._apply()


def scaled_lrs(optim: OptimSection, global_batch: int) -> dict[str, float]:
    """``lr``, ``warmup_lr`` and ``min_lr`` scaled linearly from ``optim.lr_scale_batch`` to ``global_batch``."""
    factor = global_batch / optim.lr_scale_batch if optim.lr_scale_batch else 1.0
    return {"lr": optim.lr * factor, "warmup_lr": optim.warmup_lr * factor, "min_lr": optim.min_lr * factor}


def build_schedule(optimizer: torch.optim.Optimizer, optim: OptimSection, total_steps: int, global_batch: int):
    """The schedule of the engine's ``optim`` section for a run of ``total_steps`` at ``global_batch``."""
    return WarmupCosine(
        optimizer, total_steps=total_steps, warmup_steps=optim.warmup_steps, **scaled_lrs(optim, global_batch)
    )
