"""Image-text contrastive loss (CLIP's symmetric InfoNCE), with negatives from the global batch.

Each local image is scored against the texts of ALL ranks and each local text against the images of
ALL ranks (gathered with :func:`~annofree.losses.gather.all_gather_with_grad`); the positive of local
sample ``i`` on rank ``r`` sits at global index ``r * B + i``. The loss is the mean of the two
cross-entropies. With one process this is plain CLIP on the local batch.

The ``scale`` is the multiplier of the cosine similarities, already exponentiated and clamped:
``exp(logit_scale).clamp(max=100)`` (``GroupViT.scale()``). Passing it as a tensor lets its gradient
reach the model's ``logit_scale`` parameter.

Example:
    >>> import torch
    >>> images, texts = torch.randn(4, 16), torch.randn(4, 16)
    >>> loss = image_text_contrastive_loss(images, texts, scale=torch.tensor(14.3))
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from annofree.losses.gather import all_gather_with_grad, rank_and_world


def image_text_contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor | float,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE between paired image and text embeddings.

    Args:
        image_emb: [B, C] image embeddings (any norm; they are L2-normalised here).
        text_emb: [B, C] embeddings of the matching captions, pair ``i`` with image ``i``.
        scale: the logit multiplier, ``exp(logit_scale).clamp(max=100)``; a tensor to learn it.
        gather_distributed: draw negatives from all ranks (the reference behaviour); False keeps
            negatives local to each rank.

    Returns:
        The scalar loss: mean of image->text and text->image cross-entropies over the local batch.
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must both be [B, C]; got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    image = F.normalize(image_emb, dim=-1)
    text = F.normalize(text_emb, dim=-1)
    rank, _ = rank_and_world() if gather_distributed else (0, 1)
    all_images = all_gather_with_grad(image) if gather_distributed else image
    all_texts = all_gather_with_grad(text) if gather_distributed else text

    batch = image.shape[0]
    labels = torch.arange(batch, device=image.device) + batch * rank
    logits_per_image = scale * image @ all_texts.t()  # [B, world * B]
    logits_per_text = scale * text @ all_images.t()  # [B, world * B]
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
