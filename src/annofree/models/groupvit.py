"""GroupViT: grouping image encoder + text encoder + projections into one embedding space."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from annofree.models.config import GroupViTConfig
from annofree.models.grouping import chain_assignments
from annofree.models.heads import ProjectionHead
from annofree.models.image_encoder import GroupViTImageEncoder
from annofree.models.recompute import set_grad_checkpointing
from annofree.models.text_encoder import TextEncoder


@dataclass
class GroupOutput:
    """What zero-shot segmentation needs from one forward pass over images."""

    image_embeds: torch.Tensor  # [B, D], L2-normalised pooled image embedding
    group_embeds: torch.Tensor  # [B, G, D], L2-normalised final group embeddings
    grouping: torch.Tensor  # [B, h*w, G], soft patch -> final group maps chained over stages
    soft_assignments: list[torch.Tensor]  # per stage [B, S_i, N_i], for visualising each stage
    grid: tuple[int, int]  # patch grid (h, w)


class GroupViT(nn.Module):
    """The two encoders and their projections.

    ``encode_image`` and ``encode_text`` return L2-normalised embeddings; ``image_features`` and
    ``text_features`` return them before normalisation (losses normalise themselves). ``tokenize`` turns texts
    into the ids ``encode_text`` takes, at this model's context length.
    """

    method = "groupvit"  # the method these weights belong to: how annofree.inference.segmenters builds a segmenter

    def __init__(self, config: GroupViTConfig | None = None):
        super().__init__()
        self.config = config = config or GroupViTConfig()
        self.img_encoder = GroupViTImageEncoder(config.image)
        self.text_encoder = TextEncoder(config.text)
        self.img_projector = ProjectionHead(self.img_encoder.width, config.proj_hidden_dim, config.embed_dim)
        self.text_projector = ProjectionHead(self.text_encoder.width, config.proj_hidden_dim, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init))
        self.multi_label_logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each transformer and grouping block's activations in the backward pass instead of keeping
        them (training memory set by one block; the gradients are the same). A training-time switch, not part of
        the config or the weights; inference is not affected. ``model.grad_checkpointing`` in a training config."""
        set_grad_checkpointing(self, enabled)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` floats in [0, 1] -> the encoder's input normalisation."""
        return (images - self.pixel_mean) / self.pixel_std

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.img_encoder(pixels).tokens
        return self.img_projector(tokens.mean(dim=1))

    def text_features(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[..., L]`` -> ``[..., D]``, the projected embeddings before normalisation; all texts share
        one BatchNorm pass. Prompt ensembles average these, then normalise (``class_embeddings``)."""
        shape = token_ids.shape
        x = self.text_projector(self.text_encoder(token_ids.reshape(-1, shape[-1])))
        return x.reshape(*shape[:-1], x.shape[-1])

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[B, 3, H, W]`` (any size divisible by the patch) -> ``[B, D]``, unit norm."""
        return F.normalize(self.image_features(pixels), dim=-1)

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        """CLIP BPE ids ``LongTensor[B, context_length]`` of ``texts`` for this model, on its device.

        The context length is the model's own (the published weights: 77; small configs: less), so
        ``model.encode_text(model.tokenize(texts))`` fits every GroupViT. Too long texts are truncated.
        """
        from annofree.data.tokenizer import tokenize

        return tokenize(texts, context_length=self.config.text.context_length).to(self.pixel_mean.device)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[..., L]`` (``L`` at most the context length; see :meth:`tokenize`) -> ``[..., D]``, unit
        norm."""
        return F.normalize(self.text_features(token_ids), dim=-1)

    def encode_groups(self, pixels: torch.Tensor) -> GroupOutput:
        """Image and per-group embeddings with the soft grouping maps, for zero-shot segmentation."""
        out = self.img_encoder(pixels)
        image = self.img_projector(out.tokens.mean(dim=1))
        groups = self.img_projector(out.tokens)
        return GroupOutput(
            image_embeds=F.normalize(image, dim=-1),
            group_embeds=F.normalize(groups, dim=-1),
            grouping=chain_assignments(out.soft_assignments),
            soft_assignments=out.soft_assignments,
            grid=out.grid,
        )

    def scale(self, multi_label: bool = False) -> torch.Tensor:
        """exp(logit scale), clamped at 100 as in CLIP."""
        raw = self.multi_label_logit_scale if multi_label else self.logit_scale
        return raw.exp().clamp(max=100)
