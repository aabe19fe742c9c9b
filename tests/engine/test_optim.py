"""AdamW parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from annofree.engine.config import OptimSection
from annofree.engine.optim import WarmupCosine, build_optimizer, build_schedule, lr_at, param_groups, scaled_lrs

CURVE = {"lr": 1.0, "total_steps": 12, "warmup_steps": 4, "warmup_lr": 0.2, "min_lr": 0.1}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 5)
        self.norm = nn.LayerNorm(5)
        self.group_token = nn.Parameter(torch.zeros(1, 2, 5))  # 3-D, excluded by name below
        self.scale = nn.Parameter(torch.ones(()))  # 0-D
        self.frozen = nn.Parameter(torch.ones(2, 2), requires_grad=False)


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_only_on_matrices_not_named_out() -> None:
    model = Net()
    decay, no_decay = param_groups(model, weight_decay=0.05, no_weight_decay={"group_token"})
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert _names(model, decay) == {"proj.weight"}
    assert _names(model, no_decay) == {"proj.bias", "norm.weight", "norm.bias", "group_token", "scale"}
    # Without the name, the 3-D token would decay; frozen parameters are never in the optimiser.
    decay, _ = param_groups(model, weight_decay=0.05)
    assert _names(model, decay) == {"proj.weight", "group_token"}


def test_decay_all_decays_norms_and_biases_too() -> None:
    """The DenseSiam release (and SimSiam) decay every parameter; the default exempts norms and biases."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    (everything,) = param_groups(model, weight_decay=1e-4, decay_all=True)
    assert everything["weight_decay"] == 1e-4
    assert _names(model, everything) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    decay, no_decay = param_groups(model, weight_decay=1e-4)
    assert _names(model, decay) == {"0.weight"} and _names(model, no_decay) == {"0.bias", "1.weight", "1.bias"}
    sgd = build_optimizer(model, OptimSection(name="sgd", weight_decay=1e-4, decay_all=True), lr=0.05)
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4] and len(sgd.param_groups[0]["params"]) == 4
    # One step from zero gradients: only decay moves a parameter, so the BN weight shrinks with decay_all.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = model[1].weight.detach().clone()
    sgd.step()
    assert (model[1].weight < before).all()


def test_unknown_no_weight_decay_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="group_tokn"):
        param_groups(Net(), 0.05, {"group_tokn"})


def test_schedule_values_at_known_steps() -> None:
    # Warm-up: linear from warmup_lr at step 0 towards lr at step warmup_steps.
    assert lr_at(0, **CURVE) == pytest.approx(0.2)
    assert lr_at(2, **CURVE) == pytest.approx(0.6)
    assert lr_at(4, **CURVE) == pytest.approx(1.0)
    # Cosine: halfway down at the middle of the decay, min_lr at the end (and after it).
    assert lr_at(8, **CURVE) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(6, **CURVE) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert lr_at(12, **CURVE) == pytest.approx(0.1)
    assert lr_at(20, **CURVE) == pytest.approx(0.1)
    no_warmup = {**CURVE, "warmup_steps": 0}
    assert lr_at(0, **no_warmup) == pytest.approx(1.0)


def test_schedule_object_sets_group_rates_and_resumes_on_the_curve() -> None:
    model = Net()
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=123.0)
    schedule = WarmupCosine(optimizer, **CURVE)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.2)] * 2
    for _ in range(5):
        schedule.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(lr_at(5, **CURVE))

    fresh_optimizer = torch.optim.AdamW(param_groups(Net(), 0.05), lr=123.0)
    resumed = WarmupCosine(fresh_optimizer, **CURVE)
    resumed.load_state_dict(schedule.state_dict())
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    schedule.step()
    resumed.step()
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == lr_at(6, **CURVE)


def test_lr_scales_linearly_with_the_global_batch() -> None:
    cfg = {"lr": 1.6e-3, "warmup_lr": 4e-6, "min_lr": 4e-5, "lr_scale_batch": 4096}
    scaled = scaled_lrs(OptimSection.from_dict(cfg), 1024)
    assert scaled == pytest.approx({"lr": 4e-4, "warmup_lr": 1e-6, "min_lr": 1e-5})
    assert scaled_lrs(OptimSection.from_dict({**cfg, "lr_scale_batch": None}), 1024) == pytest.approx(
        {"lr": 1.6e-3, "warmup_lr": 4e-6, "min_lr": 4e-5}
    )


def test_build_from_optim_section() -> None:
    cfg = {
        "lr": 0.01,
        "weight_decay": 0.1,
        "betas": [0.8, 0.95],
        "eps": 1e-6,
        "warmup_steps": 0,
        "warmup_lr": 0.0,
        "min_lr": 0.0,
        "lr_scale_batch": 8,
    }
    optimizer = build_optimizer(Net(), OptimSection.from_dict(cfg), lr=cfg["lr"])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.95) and optimizer.param_groups[0]["eps"] == 1e-6
    schedule = build_schedule(optimizer, OptimSection.from_dict(cfg), total_steps=10, global_batch=16)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02) == schedule.lr


def test_sgd_with_momentum_and_a_fixed_rate() -> None:
    cfg = {"name": "sgd", "lr": 0.05, "momentum": 0.8, "weight_decay": 1e-4, "warmup_steps": 0, "warmup_lr": 0.0,
           "min_lr": 0.05, "lr_scale_batch": None}  # fmt: skip
    optimizer = build_optimizer(Net(), OptimSection.from_dict(cfg), lr=cfg["lr"])
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.8
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]
    schedule = build_schedule(optimizer, OptimSection.from_dict(cfg), total_steps=10, global_batch=16)
    for _ in range(5):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # min_lr = lr: no decay


def test_cpu_parameters_get_the_fused_adamw_step_with_the_plain_update() -> None:
    cfg = {"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-6}
    torch.manual_seed(0)
    nets = [Net(), Net()]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0].proj.weight.detach().clone()
    fused = build_optimizer(nets[0], OptimSection.from_dict(cfg), lr=cfg["lr"])
    plain = torch.optim.AdamW(param_groups(nets[1], 0.1), lr=0.01, betas=(0.9, 0.98), eps=1e-6)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    for _ in range(3):
        x = torch.randn(4, 3)
        for net, optimizer in zip(nets, (fused, plain), strict=True):
            net.proj(x).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for (key, value), other in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        torch.testing.assert_close(value, other, rtol=1e-6, atol=1e-7, msg=key)
    assert not torch.equal(nets[0].proj.weight, start)  # the steps did update
