"""Losses: image-text contrastive and multi-label contrastive (GroupViT), with a differentiable all-gather."""

from annofree.losses.contrastive import image_text_contrastive_loss
from annofree.losses.gather import all_gather_with_grad, rank_and_world
from annofree.losses.multi_label import multi_label_contrastive_loss

__all__ = [
    "all_gather_with_grad",
    "image_text_contrastive_loss",
    "multi_label_contrastive_loss",
    "rank_and_world",
]
