"""Models compute; they do not read files or configs. GroupViT; ResNet + FPN + heads for DenseSiam."""

from annofree.models.config import GroupViTConfig, ImageEncoderConfig, TextEncoderConfig
from annofree.models.densesiam import DenseSiam, DenseSiamConfig
from annofree.models.densesiam_heads import (
    DensePredictor,
    DenseProjector,
    GlobalPredictor,
    GlobalProjector,
    RegionSim,
    region_embeddings,
)
from annofree.models.fpn import FPNDecoder
from annofree.models.groupvit import GroupOutput, GroupViT
from annofree.models.resnet import ResNet, resnet18, resnet50

__all__ = [
    "DensePredictor",
    "DenseProjector",
    "DenseSiam",
    "DenseSiamConfig",
    "FPNDecoder",
    "GlobalPredictor",
    "GlobalProjector",
    "GroupOutput",
    "GroupViT",
    "GroupViTConfig",
    "ImageEncoderConfig",
    "RegionSim",
    "ResNet",
    "TextEncoderConfig",
    "region_embeddings",
    "resnet18",
    "resnet50",
]
