"""The deployable DenseSiam model (Zhang et al., ECCV 2022): a ResNet with an optional PiCIE-style FPN and
the heads of the three similarity branches.

======================  =========================================================================
attribute               what
======================  =========================================================================
``backbone``            ResNet-18/50 (torchvision names)
``fpn``                 :class:`FPNDecoder` to ``fpn_channels`` at stride 4, or None (dense = res5)
``projector``           PixSim projector g: dense features -> ``dense_dim`` channels (= clusters)
``predictor``           PixSim predictor h
``aux_projector`` /     the over-clustering head (``aux_dim`` clusters), or None
``aux_predictor``
``global_projector`` /  SimSiam's global branch on avg-pooled res5, or None
``global_predictor``
``region``              :class:`RegionSim` (official ``kernel_projector`` / ``kernel_predictor``), or None
======================  =========================================================================

Inference takes pixels in ``[0, 1]`` and normalises them inside (``pixel_mean`` / ``pixel_std``):
:meth:`DenseSiam.dense_features`, :meth:`DenseSiam.cluster_logits` and :meth:`DenseSiam.segment_clusters`
(the argmax over the projector's channels at the input resolution, as the released segmenter).

Example:
    >>> import torch
    >>> model = DenseSiam(DenseSiamConfig(dense_dim=5, aux_dim=0)).eval()
    >>> model.segment_clusters(torch.rand(2, 3, 32, 48)).shape
    torch.Size([2, 32, 48])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from annofree.models.densesiam_heads import (
    DensePredictor,
    DenseProjector,
    GlobalPredictor,
    GlobalProjector,
    RegionSim,
)
from annofree.models.fpn import FPNDecoder
from annofree.models.resnet import RESNETS
from annofree.sections import Section, require, spec


@dataclass(frozen=True)
class DenseSiamConfig(Section, key="model"):
    """DenseSiam's architecture; the defaults are the released COCO-Stuff-27 segmentation model."""

    backbone: str = "resnet18"  # resnet18 | resnet50
    zero_init_residual: bool = False  # SimSiam's builder starts each residual branch at zero
    fpn: bool = True  # False: the dense features are res5 (stride 32), as for ResNet-50 pre-training
    fpn_channels: int = spec(128, gt=0)
    dense_dim: int = spec(27, ge=2)  # PixSim projector output channels = clusters in segmentation
    dense_hidden: int = spec(128, gt=0)
    dense_num_hidden: int = spec(2, ge=0)
    dense_pred_hidden: int = spec(128, gt=0)
    aux_dim: int = spec(128, ge=0)  # over-clustering head; 0 leaves it out
    global_branch: bool = False  # SimSiam's image-level branch (off in the released segmentation config)
    global_dim: int = spec(2048, gt=0)
    global_hidden: int = spec(2048, gt=0)
    global_pred_hidden: int = spec(512, gt=0)
    region_branch: bool = True  # RegionSim
    region_dim: int = spec(128, gt=0)  # projected region width
    region_num_hidden: int = spec(2, ge=0)
    region_final_bn: bool = True
    region_predictor: bool = True
    # Hidden width of the region projector and predictor; None: the feature width (the released heads: 128).
    # The paper's ResNet-50 pre-training heads are not published; 2048-wide ones on B x K regions cost as much
    # as the backbone, so coco_pretrain.yaml uses a 512 bottleneck, as SimSiam's predictor does.
    region_hidden: int | None = spec(None, gt=0)
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics, as the release
    pixel_std: tuple[float, float, float] = spec((0.229, 0.224, 0.225), gt=0)

    def __post_init__(self):
        object.__setattr__(self, "pixel_mean", tuple(self.pixel_mean))  # lists given in code
        object.__setattr__(self, "pixel_std", tuple(self.pixel_std))
        require(self.backbone in RESNETS, "backbone", " | ".join(sorted(RESNETS)), self.backbone)
        require(self.dense_dim >= 2, "dense_dim", "an integer >= 2 (clusters)", self.dense_dim)
        require(self.aux_dim != 1 and self.aux_dim >= 0, "aux_dim", "0 (no over-clustering head) or >= 2", self.aux_dim)


class Encoded(NamedTuple):
    """What the trunk gives the heads: ``dense [B, C, h, w]`` (FPN or res5) and ``res5 [B, C5, h5, w5]``."""

    dense: torch.Tensor
    res5: torch.Tensor


class DenseSiam(nn.Module):
    method = "densesiam"  # the method these weights belong to: how annofree.inference.segmenters builds a segmenter

    def __init__(self, config: DenseSiamConfig | None = None):
        super().__init__()
        cfg = self.config = config or DenseSiamConfig()
        self.backbone = RESNETS[cfg.backbone](zero_init_residual=cfg.zero_init_residual)
        self.fpn = FPNDecoder(self.backbone.channels, cfg.fpn_channels) if cfg.fpn else None
        width = cfg.fpn_channels if cfg.fpn else self.backbone.num_features
        self.dense_channels = width
        self.projector = DenseProjector(width, cfg.dense_dim, cfg.dense_hidden, cfg.dense_num_hidden)
        self.predictor = DensePredictor(cfg.dense_dim, cfg.dense_pred_hidden)
        self.aux_projector = self.aux_predictor = None
        if cfg.aux_dim:
            self.aux_projector = DenseProjector(width, cfg.aux_dim, cfg.dense_hidden, cfg.dense_num_hidden)
            self.aux_predictor = DensePredictor(cfg.aux_dim, cfg.dense_pred_hidden)
        self.global_projector = self.global_predictor = None
        if cfg.global_branch:
            self.global_projector = GlobalProjector(self.backbone.num_features, cfg.global_hidden, cfg.global_dim)
            self.global_predictor = GlobalPredictor(cfg.global_dim, cfg.global_pred_hidden)
        self.region = None
        if cfg.region_branch:
            self.region = RegionSim(
                width,
                cfg.region_dim,
                cfg.region_num_hidden,
                cfg.region_final_bn,
                cfg.region_predictor,
                hidden_dim=cfg.region_hidden,
            )
        # Not saved: they come from the config, so weights stay pure parameters and BN statistics.
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` floats in [0, 1] -> the backbone's input normalisation."""
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, normalized: torch.Tensor) -> Encoded:
        """Normalised pixels -> dense features (FPN output, or res5 without FPN) and res5."""
        stages = self.backbone.forward_features(normalized)
        dense = self.fpn(stages) if self.fpn is not None else stages["res5"]
        return Encoded(dense, stages["res5"])

    def global_embedding(self, res5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """res5 -> the global branch's (projection z, prediction p), ``[B, global_dim]`` each."""
        if self.global_projector is None:
            raise RuntimeError("this DenseSiam has no global branch (model.global_branch: false)")
        z = self.global_projector(torch.flatten(self.backbone.avgpool(res5), 1))
        return z, self.global_predictor(z)

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> dense features ``[B, C, H/4, W/4]`` (FPN) or ``[B, C5, H/32, W/32]``."""
        return self.encode(self.normalize_pixels(pixels)).dense

    def cluster_logits(self, pixels: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> projector logits ``[B, dense_dim, H, W]`` (bilinear; ``size`` overrides)."""
        z = self.projector(self.dense_features(pixels))
        return F.interpolate(z, size=size or pixels.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def segment_clusters(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> cluster ids ``LongTensor [B, H, W]`` (argmax over the projector)."""
        return self.cluster_logits(pixels).max(dim=1).indices  # = argmax(dim=1), several times faster on CPU

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`cluster_logits`."""
        return self.cluster_logits(pixels)


__all__ = ["DenseSiam", "DenseSiamConfig", "Encoded"]
