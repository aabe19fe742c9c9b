"""DenseSiam heads: layer layout and official key names, shapes, region pooling by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from annofree.models.densesiam_heads import (
    DensePredictor,
    DenseProjector,
    GlobalPredictor,
    GlobalProjector,
    RegionPredictor,
    RegionProjector,
    RegionSim,
    region_embeddings,
)


def _layout(module: nn.Sequential) -> list[str]:
    """Layer types with the facts that matter: bias, BN affinity."""
    out = []
    for m in module:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            out.append(f"{type(m).__name__}{'+b' if m.bias is not None else ''}")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(f"{type(m).__name__}{'' if m.affine else '(noaffine)'}")
        else:
            out.append(type(m).__name__)
    return out


def test_dense_projector_and_predictor_match_the_release() -> None:
    g = DenseProjector(128, 27, 128, num_hidden=2)
    assert _layout(g) == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["Conv2d+b", "BatchNorm2d(noaffine)"]
    assert g[6].weight.shape == (27, 128, 1, 1)
    h = DensePredictor(27, 128)
    assert _layout(h) == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d+b"]
    assert (h[0].weight.shape, h[3].weight.shape) == ((128, 27, 1, 1), (27, 128, 1, 1))
    # official key names when held as `projector` / `predictor`
    holder = nn.Module()
    holder.projector, holder.predictor = g, h
    assert "projector.7.running_mean" in holder.state_dict() and "predictor.3.bias" in holder.state_dict()


def test_dense_shapes_and_standardised_logits() -> None:
    torch.manual_seed(0)
    z = DenseProjector(16, 5, 8).train()(torch.randn(2, 16, 4, 4))
    assert z.shape == (2, 5, 4, 4)
    # the non-affine BN output has zero mean and unit variance per cluster over the batch (train mode)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-5, rtol=0)
    assert DensePredictor(5, 8)(z).shape == (2, 5, 4, 4)


def test_global_heads_match_simsiam() -> None:
    proj = GlobalProjector(64, 32, 48)
    assert _layout(proj) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d(noaffine)"]
    assert [m.weight.shape for m in proj if isinstance(m, nn.Linear)] == [(32, 64), (32, 32), (48, 32)]
    pred = GlobalPredictor(48, 12)
    assert _layout(pred) == ["Linear", "BatchNorm1d", "ReLU", "Linear+b"]
    assert pred(proj(torch.randn(2, 64))).shape == (2, 48)
    # SimSiam ResNet-50 sizes: projector 3 * 2048^2 + 4 BN(2048) affine pairs; predictor with bottleneck 512
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(GlobalProjector(2048, 2048, 2048)) == 3 * 2048 * 2048 + 2 * 2 * 2048
    assert n(GlobalPredictor(2048, 512)) == 2048 * 512 + 2 * 512 + 512 * 2048 + 2048


def test_region_embeddings_by_hand() -> None:
    # two clusters; logits make pixel 0 certainly cluster 0, pixel 1 certainly cluster 1, pixel 2 half/half
    big = 50.0
    z = torch.tensor([[big, -big, 0.0], [-big, big, 0.0]]).reshape(1, 2, 1, 3)
    feats = torch.tensor([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]]).reshape(1, 2, 1, 3)  # C=2
    regions = region_embeddings(z, feats)
    expected = torch.tensor([[[1.0 + 50.0, 2.0 + 100.0], [10.0 + 50.0, 20.0 + 100.0]]])  # sums, not means
    torch.testing.assert_close(regions, expected)


def test_region_sim_shapes_layout_and_mask_gradient() -> None:
    torch.manual_seed(0)
    head = RegionSim(dim=8, out_dim=8)
    assert _layout(head.projector) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d(noaffine)"]
    assert _layout(head.predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear+b"]
    assert _layout(RegionProjector(8, final_bn=False))[-1] == "Linear"
    assert isinstance(RegionPredictor(8), nn.Sequential)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    feats = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_r, p_r = head(z, feats)
    assert z_r.shape == p_r.shape == (2, 3, 8)
    p_r.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # masks are not detached (official)
    z_only, p_same = RegionSim(8, 8, with_predictor=False)(z.detach(), feats.detach())
    assert torch.equal(p_same, z_only)


@pytest.mark.parametrize("grid", [(2, 2), (6, 6)])  # fewer pixels than regions (reordered path) and more
@pytest.mark.parametrize("hidden", [None, 5])  # the feature width, or a bottleneck
def test_region_sim_equals_pooling_then_projecting(grid, hidden) -> None:
    """With more regions than pixels the first projector layer runs on the pixels: the same numbers."""
    torch.manual_seed(0)
    head = RegionSim(dim=8, out_dim=4, hidden_dim=hidden).train()
    widths = [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == ([8, 8, 4, 8, 4] if hidden is None else [5, 5, 4, 5, 4])  # projector, then predictor
    z = torch.randn(3, 16, *grid, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(3, 8, *grid, dtype=torch.float64, requires_grad=True)
    head = head.double()
    z_r, _ = head(z, feats)
    regions = region_embeddings(z, feats).reshape(3 * 16, 8)  # the definition: pool, then project
    expected = head.projector(regions)
    torch.testing.assert_close(z_r.reshape(3 * 16, 4), expected)
    grads = torch.autograd.grad(z_r.sum(), (z, feats))
    expected_grads = torch.autograd.grad(expected.sum(), (z, feats))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
