"""Losses: image-text and multi-label contrastive (GroupViT; the multi-label one also in sigmoid form) with a
differentiable all-gather; SimSiam-style similarities and region InfoNCE (DenseSiam)."""

from annofree.losses.contrastive import image_text_contrastive_loss
from annofree.losses.gather import all_gather_with_grad, rank_and_world
from annofree.losses.multi_label import multi_label_contrastive_loss
from annofree.losses.multi_label_sigmoid import multi_label_sigmoid_loss
from annofree.losses.region import region_infonce
from annofree.losses.siamese import (
    aux_loss_weights,
    ce_similarity,
    negative_cosine,
    self_label_loss,
    symmetric_similarity_loss,
)

__all__ = [
    "all_gather_with_grad",
    "aux_loss_weights",
    "ce_similarity",
    "image_text_contrastive_loss",
    "multi_label_contrastive_loss",
    "multi_label_sigmoid_loss",
    "negative_cosine",
    "rank_and_world",
    "region_infonce",
    "self_label_loss",
    "symmetric_similarity_loss",
]
