"""A toy method for the engine tests only: a small regression net on synthetic data.

It registers itself as ``toy`` when imported. Optional randomness exercises exact resume: ``forward_noise``
draws from the global torch, numpy and python RNGs in ``forward``; ``data_noise`` adds noise to the inputs
from generators seeded by (seed, epoch, rank, batch index), as a real data pipeline must be seeded.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from annofree.methods.base import LoaderSpec, Method, register

IN_FEATURES, HIDDEN, OUT_FEATURES = 4, 8, 2


@register
class ToyMethod(Method):
    name = "toy"
    sections = ("toy",)

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        toy = config.get("toy", {})
        self.samples = int(toy.get("samples", 64))
        self.forward_noise = float(toy.get("forward_noise", 0.0))
        self.data_noise = float(toy.get("data_noise", 0.0))
        self.corrupt_every = int(toy.get("corrupt_every", 0))
        self.crash_at = toy.get("crash_at")
        self.nan_from = toy.get("nan_from")  # the loss becomes NaN from this step on
        self.step_delay = float(toy.get("step_delay", 0.0))  # seconds of sleep before each step (signal tests)
        # SIGKILL rank kill_rank before step kill_at, in torchrun's first attempt only (elastic restart tests)
        self.kill_at, self.kill_rank = toy.get("kill_at"), int(toy.get("kill_rank", 0))
        self.step = 0
        self.pred_dtype: torch.dtype | None = None
        self.net = nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, OUT_FEATURES))
        self.log_scale = nn.Parameter(torch.zeros(()))  # a loss parameter: trained and resumed, not deployed
        self.on_step_calls: list[tuple[int, int]] = []
        self.specs: list[LoaderSpec] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.net(batch["x"])
        self.pred_dtype = pred.dtype  # shows whether autocast was on
        pred = pred.float()
        if self.forward_noise:
            jitter = torch.randn_like(pred) + random.random() + float(np.random.rand())
            pred = pred + self.forward_noise * jitter
        mse = ((pred - batch["y"]) ** 2).mean()
        if self.nan_from is not None and self.step >= self.nan_from:
            mse = mse * float("nan")
        return {
            "loss_mse": mse * self.log_scale.exp(),
            "loss_reg": 0.1 * (self.log_scale - 0.5) ** 2,
            "mae": (pred - batch["y"]).abs().mean().detach(),
            "skipped": batch["skipped"],
        }

    def dataset(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(10_000 + seed)
        x = torch.randn(self.samples, IN_FEATURES, generator=gen)
        y = torch.tanh(x @ torch.randn(IN_FEATURES, OUT_FEATURES, generator=gen))
        return x, y

    def train_batches(self, spec: LoaderSpec):
        self.specs.append(spec)
        x, y = self.dataset(spec.seed)
        order = torch.randperm(self.samples, generator=torch.Generator().manual_seed(spec.seed * 1000 + spec.epoch))
        mine = order[spec.rank :: spec.world_size]
        for index in range(spec.skip_batches, len(mine) // spec.batch_size):
            rows = mine[index * spec.batch_size : (index + 1) * spec.batch_size]
            inputs = x[rows]
            if self.data_noise:
                seed = ((spec.seed * 1009 + spec.epoch) * 1013 + spec.rank) * 10_007 + index
                inputs = inputs + self.data_noise * torch.randn(
                    inputs.shape, generator=torch.Generator().manual_seed(seed)
                )
            corrupt = int((rows % self.corrupt_every == 0).sum()) if self.corrupt_every else 0
            yield {"x": inputs, "y": y[rows], "skipped": torch.tensor(corrupt)}

    def deployable(self) -> nn.Module:
        return self.net

    def model_config(self) -> dict[str, Any]:
        return {"in": IN_FEATURES, "hidden": HIDDEN, "out": OUT_FEATURES}

    def on_step(self, step: int, total_steps: int) -> None:
        self.on_step_calls.append((step, total_steps))
        self.step = step
        if self.step_delay:
            time.sleep(self.step_delay)
        if self.crash_at is not None and step == self.crash_at:
            raise RuntimeError(f"toy crash before step {step}")
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if step == self.kill_at and first_attempt and int(os.environ.get("RANK", "0")) == self.kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)  # as a lost node: no handler, no last words


# The runs of the torchrun test (toy_worker.py): plain (no randomness), and noisy (for exact resume).
PLAIN_RUN = {"optim": {"accum_steps": 2}, "train": {"steps": 4, "batch_size": 2, "log_every": 1}}
NOISY_RUN = {
    "optim": {"accum_steps": 2, "clip_grad": 1.0},
    "train": {"steps": 8, "batch_size": 2, "save_every": 4, "log_every": 1},
    "toy": {"samples": 20, "forward_noise": 0.3, "data_noise": 0.2},
}


def toy_config(**sections: Any) -> dict[str, Any]:
    """A small CPU config for the toy; ``sections`` merge over it (``optim={"lr": 0.1}``)."""
    config: dict[str, Any] = {
        "seed": 3,
        "method": "toy",
        "optim": {"lr": 0.05, "weight_decay": 0.01, "warmup_steps": 2, "warmup_lr": 0.001, "min_lr": 0.001},
        "train": {
            "steps": 6,
            "batch_size": 4,
            "num_workers": 0,
            "device": "cpu",
            "precision": "fp32",  # exact comparisons: the default (auto) would pick bf16 on some CPUs
            "log_every": 2,
            "save_every": 0,
            "tensorboard": False,
        },
        "toy": {},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            config[name] = {**config.get(name, {}), **copy.deepcopy(values)}
        else:
            config[name] = values
    return config
