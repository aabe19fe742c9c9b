"""annofree.models.layers.attention: the fused kernel, or for bf16 on CPUs without AMX two bf16 matmuls and a
softmax; both compute the same attention (bf16 rounding apart), causal or not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from annofree.models import layers


def qkv(queries: int, keys: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(2, 3, queries, 16), (2, 3, keys, 16), (2, 3, keys, 16)]
    return [(3 * torch.randn(s, generator=gen) if i == 0 else torch.randn(s, generator=gen)).to(dtype) for i, s in
            enumerate(shapes)]  # fmt: skip


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.double() - reference).norm() / reference.norm())


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("amx", [False, True])
def test_bf16_attention_is_the_fp64_attention_up_to_bf16_rounding(monkeypatch, amx: bool, is_causal: bool) -> None:
    monkeypatch.setattr(layers, "cpu_has_amx", lambda: amx)
    q, k, v = qkv(9, 9, torch.bfloat16)
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=is_causal)
    assert relative_error(layers.attention(q, k, v, is_causal=is_causal), reference) < 2e-2


@pytest.mark.parametrize("is_causal", [False, True])
def test_both_bf16_forms_have_the_same_gradients_up_to_bf16_rounding(monkeypatch, is_causal: bool) -> None:
    grads = []
    for amx in (True, False):
        monkeypatch.setattr(layers, "cpu_has_amx", lambda amx=amx: amx)
        q, k, v = (t.requires_grad_() for t in qkv(7, 7, torch.bfloat16))
        out = layers.attention(q, k, v, is_causal=is_causal)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([t.grad.double() for t in (q, k, v)])
    for fused, matmuls in zip(*grads, strict=True):
        assert relative_error(matmuls, fused) < 3e-2


def test_fp32_and_cross_attention_use_the_fused_kernel_exactly() -> None:
    q, k, v = qkv(4, 11, torch.float32)
    assert torch.equal(layers.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_bf16_matmul_form_masks_the_future_and_drops_out_in_training(monkeypatch) -> None:
    monkeypatch.setattr(layers, "cpu_has_amx", lambda: False)
    q, k, v = qkv(5, 5, torch.bfloat16)
    changed = v.clone()
    changed[:, :, 3:] += 1  # later keys change nothing before position 3
    out, out_changed = layers.attention(q, k, v, is_causal=True), layers.attention(q, k, changed, is_causal=True)
    assert torch.equal(out[:, :, :3], out_changed[:, :, :3]) and not torch.equal(out[:, :, 3:], out_changed[:, :, 3:])
    torch.manual_seed(0)
    assert not torch.equal(layers.attention(q, k, v, dropout_p=0.5), layers.attention(q, k, v))
