"""precision: `auto` resolves to bf16 exactly where the device runs bf16 natively; explicit values stay."""

from __future__ import annotations

import re

import pytest
import torch

from annofree import precision
from annofree.precision import autocast, describe, resolve_precision


def _cpu(monkeypatch: pytest.MonkeyPatch, *, machine: str = "x86_64", **features: bool) -> None:
    flags = {"mkldnn_bf16": False, "avx512_bf16": False, "amx_tile": False, **features}
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: flags)
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)


def test_auto_is_bf16_on_a_cpu_with_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, mkldnn_bf16=True, avx512_bf16=True)
    assert resolve_precision("auto", "cpu") == ("bf16", "this CPU runs bf16 natively: avx512_bf16")
    _cpu(monkeypatch, mkldnn_bf16=True, amx_tile=True)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16", "this CPU runs bf16 natively: amx_tile")


@pytest.mark.parametrize(
    "features", [{}, {"mkldnn_bf16": True}, {"avx512_bf16": True}], ids=["nothing", "emulated", "no-onednn"]
)
def test_auto_is_fp32_where_bf16_would_be_emulated(monkeypatch: pytest.MonkeyPatch, features: dict) -> None:
    _cpu(monkeypatch, **features)
    resolved, reason = resolve_precision("auto", "cpu")
    assert resolved == "fp32"
    assert ("emulate" in reason) == features.get("mkldnn_bf16", False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_an_arm_cpu_follows_torch(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    _cpu(monkeypatch, machine="aarch64", mkldnn_bf16=native)
    resolved, reason = resolve_precision("auto", "cpu")
    assert resolved == ("bf16" if native else "fp32")
    assert "aarch64" in reason


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_asks_for_bf16_without_emulation(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["including_emulation"] = including_emulation
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    resolved, reason = resolve_precision("auto", "cuda:0")
    assert resolved == ("bf16" if native else "fp32") and "Test GPU" in reason
    assert asked == {"including_emulation": False}


def test_auto_elsewhere_is_fp32() -> None:
    assert resolve_precision("auto", "meta")[0] == "fp32"


@pytest.mark.parametrize("explicit", ["fp32", "bf16", "fp16"])
def test_explicit_precision_is_kept_whatever_the_cpu(monkeypatch: pytest.MonkeyPatch, explicit: str) -> None:
    _cpu(monkeypatch, mkldnn_bf16=True, avx512_bf16=True)
    assert resolve_precision(explicit, "cpu") == (explicit, "as configured")
    _cpu(monkeypatch)
    assert resolve_precision(explicit, "cpu") == (explicit, "as configured")


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("auto | fp32 | bf16 | fp16")):
        resolve_precision("fp8", "cpu")


def test_the_log_phrase_says_what_and_why() -> None:
    assert describe("auto", "bf16", "why") == "precision auto -> bf16 (why)"
    assert describe("fp32", "fp32", "as configured") == "precision fp32 (as configured)"


def test_autocast_runs_the_resolved_dtype() -> None:
    layer = torch.nn.Linear(4, 4)
    with autocast("bf16", "cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_the_real_probe_answers_on_this_machine() -> None:
    resolved, reason = resolve_precision("auto", "cpu")
    assert resolved in ("bf16", "fp32") and reason
    assert set(precision.cpu_bf16_features()) == {"mkldnn_bf16", "avx512_bf16", "amx_tile"}
