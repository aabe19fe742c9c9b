"""DenseSiam's heads: SimSiam's global projector/predictor, PixSim's dense projector g / predictor h,
and RegionSim's region pooling, projector and predictor.

Every head except :class:`RegionSim` is an ``nn.Sequential`` subclass, so its ``state_dict`` keys are the
official ones (``projector.0.weight`` ...) when a model holds it under the official attribute name
(``projector``, ``predictor``, ``aux_projector``, ``aux_predictor``, ``global_projector``,
``global_predictor``, ``kernel_projector``, ``kernel_predictor`` in ZwwWayne/DenseSiam
``densesiam/models/architectures/densesiam.py``).

What the official code does, and these heads reproduce (released COCO-Stuff config: ``num_proj_convs=2``,
``num_aux_proj_convs=2``, 27 clusters, 128 auxiliary clusters, ``kernel_norm=True``):

- dense projector g: ``[1x1 conv C->C (no bias), BN2d, ReLU] x num_proj_convs``, 1x1 conv ``C->K`` WITH
  bias, ``BatchNorm2d(K, affine=False)``; the auxiliary over-clustering projector has the same shape with
  ``K_aux`` channels. The non-affine BN keeps every cluster logit standardised over the batch, which the
  reference credits against collapse.
- dense predictor h: 1x1 conv ``K->128`` (no bias), BN2d, ReLU, 1x1 conv ``128->K`` with bias.
- global projector: ``[Linear (no bias), BN1d, ReLU] x 2``, Linear (no bias), ``BatchNorm1d(affine=False)``;
  predictor: Linear (no bias), BN1d, ReLU, Linear with bias. In DenseSiam it reads avg-pooled res5
  (512-d for ResNet-18) and is off in the released config. SimSiam's own projector keeps a frozen bias on
  its last Linear; a BN follows, so leaving the bias out is the same function.
- RegionSim ("kernel contrast"): masks ``softmax(z)`` over the K channels, NOT detached (the gradient
  reaches the projector through the masks); region embedding ``einsum('bkhw,bchw->bkc')`` of the masks
  with the FPN output (128-d), a sum over pixels, not divided by the mask area; region projector
  ``[Linear (no bias), BN1d, ReLU] x 2``, Linear (no bias), ``BatchNorm1d(affine=False)`` (the last BN is
  the ``kernel_proj_final_bn`` option, on by default); predictor Linear ``128->128`` (no bias), BN1d, ReLU,
  Linear ``128->128`` with bias. The B*K region embeddings of a batch are one BN batch.
"""

from __future__ import annotations

import torch
from torch import nn


def _linear_bn_relu(in_dim: int, out_dim: int) -> list[nn.Module]:
    return [nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _mlp_layers(in_dim: int, hidden_dim: int, num_hidden: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for i in range(num_hidden):
        layers += _linear_bn_relu(in_dim if i == 0 else hidden_dim, hidden_dim)
    return layers, hidden_dim if num_hidden else in_dim


class GlobalProjector(nn.Sequential):
    """SimSiam's projector: ``[B, in_dim] -> [B, out_dim]``.

    ``[Linear (no bias), BN1d, ReLU] x num_hidden``, Linear (no bias), ``BatchNorm1d(out_dim, affine=False)``.
    SimSiam (ResNet-50): ``GlobalProjector(2048, 2048, 2048)``; DenseSiam's global branch (ResNet-18):
    ``GlobalProjector(512, 512, 512)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048, num_hidden: int = 2):
        layers, last = _mlp_layers(in_dim, hidden_dim, num_hidden)
        super().__init__(*layers, nn.Linear(last, out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=False))


class GlobalPredictor(nn.Sequential):
    """SimSiam's bottleneck predictor: ``[B, dim] -> [B, dim]``; Linear ``dim->hidden_dim`` (no bias), BN1d,
    ReLU, Linear ``hidden_dim->dim`` (bias). SimSiam: ``GlobalPredictor(2048, 512)``."""

    def __init__(self, dim: int = 2048, hidden_dim: int = 512):
        super().__init__(*_linear_bn_relu(dim, hidden_dim), nn.Linear(hidden_dim, dim))


class DenseProjector(nn.Sequential):
    """PixSim projector g: ``[B, in_channels, H, W] -> [B, num_clusters, H, W]`` cluster logits z.

    ``[1x1 conv (no bias), BN2d, ReLU] x num_hidden``, 1x1 conv to ``num_clusters`` (bias),
    ``BatchNorm2d(num_clusters, affine=False)``. The argmax over channels is the segmentation at inference.
    """

    def __init__(self, in_channels: int = 128, num_clusters: int = 27, hidden_channels: int = 128, num_hidden: int = 2):
        layers: list[nn.Module] = []
        for i in range(num_hidden):
            layers += _conv_bn_relu(in_channels if i == 0 else hidden_channels, hidden_channels)
        last = hidden_channels if num_hidden else in_channels
        super().__init__(
            *layers, nn.Conv2d(last, num_clusters, kernel_size=1), nn.BatchNorm2d(num_clusters, affine=False)
        )


class DensePredictor(nn.Sequential):
    """PixSim predictor h: ``[B, K, H, W] -> [B, K, H, W]``; 1x1 conv ``K->hidden`` (no bias), BN2d, ReLU,
    1x1 conv ``hidden->K`` (bias)."""

    def __init__(self, num_clusters: int = 27, hidden_channels: int = 128):
        super().__init__(*_conv_bn_relu(num_clusters, hidden_channels), nn.Conv2d(hidden_channels, num_clusters, 1))


def region_embeddings(z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Pool features into one embedding per cluster with soft masks from the cluster logits.

    Args:
        z: ``[B, K, H, W]`` cluster logits (the dense projector's output); ``softmax`` over K gives masks.
        feats: ``[B, C, H, W]`` features on the same grid (the FPN output).

    Returns:
        ``[B, K, C]``: ``sum_{h,w} softmax(z)[b, k, h, w] * feats[b, :, h, w]`` (a sum, not an area mean,
        as in the official code; so a region's norm grows with its area).
    """
    if z.shape[0] != feats.shape[0] or z.shape[-2:] != feats.shape[-2:]:
        raise ValueError(f"z {tuple(z.shape)} and feats {tuple(feats.shape)} must share batch and H, W")
    return torch.einsum("bkhw,bchw->bkc", z.softmax(dim=1), feats)


class RegionProjector(nn.Sequential):
    """RegionSim projector: ``[N, dim] -> [N, out_dim]`` (N = B * K regions).

    ``[Linear (no bias), BN1d, ReLU] x num_hidden``, Linear (no bias), then ``BatchNorm1d(affine=False)``
    when ``final_bn``. The hidden width is ``hidden_dim`` (default ``dim``, as the released 128-d heads).
    """

    def __init__(
        self,
        dim: int = 128,
        out_dim: int = 128,
        num_hidden: int = 2,
        final_bn: bool = True,
        hidden_dim: int | None = None,
    ):
        layers, last = _mlp_layers(dim, hidden_dim or dim, num_hidden)
        layers.append(nn.Linear(last, out_dim, bias=False))
        if final_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)


class RegionPredictor(nn.Sequential):
    """RegionSim predictor: ``[N, dim] -> [N, dim]``; Linear ``dim->hidden`` (no bias), BN1d, ReLU,
    Linear ``hidden->dim`` (bias)."""

    def __init__(self, dim: int = 128, hidden_dim: int = 128):
        super().__init__(*_linear_bn_relu(dim, hidden_dim), nn.Linear(hidden_dim, dim))


class RegionSim(nn.Module):
    """Region embeddings -> projector -> predictor for one view.

    ``forward(z [B, K, H, W], feats [B, C, H, W]) -> (z_r [B, K, D], p_r [B, K, D])``: the projected
    regions (targets for the other view) and their predictions. Pass both views' outputs to
    :func:`annofree.losses.region.region_infonce`.

    Args:
        dim: feature width C (128, the FPN output).
        out_dim: projected width D.
        num_hidden: hidden blocks in the projector (2).
        final_bn: non-affine BN at the end of the projector (official default on).
        with_predictor: False makes ``p_r`` the projection itself (official ``kernel_with_pred=False``).
        hidden_dim: hidden width of projector and predictor (default ``dim``: the released heads, 128 wide).
    """

    def __init__(
        self,
        dim: int = 128,
        out_dim: int = 128,
        num_hidden: int = 2,
        final_bn: bool = True,
        with_predictor: bool = True,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        hidden = hidden_dim or dim
        self.projector = RegionProjector(dim, out_dim, num_hidden, final_bn, hidden)
        self.predictor = RegionPredictor(out_dim, hidden) if with_predictor else None

    def forward(self, z: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = z.shape[:2]
        first = self.projector[0]
        if k > z.shape[-2] * z.shape[-1] and isinstance(first, nn.Linear) and first.bias is None:
            # More regions than pixels (ResNet-50 pre-training: 256 regions on 7 x 7): the first layer is linear
            # and bias-free, so it commutes with the pooling; applying it to the pixels is the same and cheaper.
            pixels = first(feats.flatten(2).transpose(1, 2)).transpose(1, 2)  # [B, C', H * W]
            z_r = region_embeddings(z, pixels.unflatten(2, z.shape[-2:])).reshape(b * k, -1)
            for layer in list(self.projector)[1:]:  # (slicing would rebuild a RegionProjector from its layers)
                z_r = layer(z_r)
        else:
            z_r = self.projector(region_embeddings(z, feats).reshape(b * k, -1))
        p_r = z_r if self.predictor is None else self.predictor(z_r)
        return z_r.reshape(b, k, -1), p_r.reshape(b, k, -1)


__all__ = [
    "DensePredictor",
    "DenseProjector",
    "GlobalPredictor",
    "GlobalProjector",
    "RegionPredictor",
    "RegionProjector",
    "RegionSim",
    "region_embeddings",
]
