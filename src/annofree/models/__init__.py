"""Models compute; they do not read files or configs."""

from annofree.models.config import GroupViTConfig, ImageEncoderConfig, TextEncoderConfig
from annofree.models.groupvit import GroupOutput, GroupViT

__all__ = ["GroupOutput", "GroupViT", "GroupViTConfig", "ImageEncoderConfig", "TextEncoderConfig"]
