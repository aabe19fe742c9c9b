"""Sigmoid multi-label loss: an image against the noun prompts of the global batch, one binary term per pair.

Not in the GroupViT paper, which uses the softmax form
(:func:`~annofree.losses.multi_label.multi_label_contrastive_loss`): this is the pairwise sigmoid loss of SigLIP
(Zhai et al., ICCV 2023) applied to GroupViT's noun prompts. Every pair
(image ``i``, prompt ``c``) of the local images and the prompts gathered from all ranks is a logistic
regression with target 1 when prompt ``c`` is one of image ``i``'s own prompts, or carries the same text as
one of them (equal non-negative ``prompt_ids``), and 0 otherwise:

    loss = sum over pairs of BCE(scale * cos(image_i, prompt_c) + bias, target_ic) / B

Why it exists: at small scale the softmax form dilutes the signal. A caption's prompts mostly name things no
image shows ("photo", "year", "front"), and each image must spread its probability over them; the sigmoid form
asks an independent question per noun ("is there a circle?"), which is what captions that mention every object
can answer, and what a label-supervised classifier learns from. docs/learning.md has the runs that compare the
two forms.

Summed over the ranks, every (image, prompt) pair of the global batch counts once, so the mean of the ranks'
losses equals the single-process loss on the concatenated batch, gradients included (all-gather with gradient).

Example:
    >>> import torch
    >>> images, prompts = torch.randn(4, 16), torch.randn(4, 3, 16)
    >>> ids = torch.tensor([[0, 1, 2], [0, 3, 4], [5, 6, 7], [1, 8, -1]])  # texts 0 and 1 appear twice
    >>> loss = multi_label_sigmoid_loss(images, prompts, scale=10.0, bias=-5.0, prompt_ids=ids)
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from annofree.losses.gather import all_gather_with_grad, rank_and_world
from annofree.losses.multi_label import check_prompt_inputs, same_text_columns


def multi_label_sigmoid_loss(
    image_emb: torch.Tensor,
    prompt_emb: torch.Tensor,
    scale: torch.Tensor | float,
    bias: torch.Tensor | float,
    prompt_ids: torch.Tensor | None = None,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """Pairwise sigmoid loss between images and the K noun prompts of every caption in the global batch.

    Args:
        image_emb: [B, C] or [B, 1, C] image embeddings (any norm; they are L2-normalised here).
        prompt_emb: [B, K, C] embeddings of the K prompts made from caption ``i``'s nouns.
        scale: multiplier of the cosine similarities (e.g. ``exp(multi_label_logit_scale).clamp(max=100)``).
        bias: added to every logit; SigLIP starts it negative, as most pairs are negatives.
        prompt_ids: optional [B, K] integer identities of the prompt texts: a prompt whose id equals one of an
            image's own ids is a positive of that image too. Negative ids mean "no identity" (e.g. the caption
            standing in for a missing noun): positive for its own image only. Without ids, only an image's own
            prompts are positives.
        gather_distributed: score against the prompts of all ranks; False keeps them local.

    Returns:
        The scalar loss: the summed binary cross-entropies divided by the local batch size.
    """
    image_emb = check_prompt_inputs(image_emb, prompt_emb, prompt_ids)

    batch, num_prompts, _ = prompt_emb.shape
    rank, _ = rank_and_world() if gather_distributed else (0, 1)
    gather = all_gather_with_grad if gather_distributed else (lambda x: x)
    image = F.normalize(image_emb, dim=-1)
    all_prompts = gather(F.normalize(prompt_emb, dim=-1).flatten(0, 1))  # [N*K, C]
    logits = scale * image @ all_prompts.t() + bias  # [B, N*K]
    target = _targets(batch, num_prompts, rank, prompt_ids, gather, logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / batch


def _targets(batch: int, num_prompts: int, rank: int, prompt_ids, gather, logits: torch.Tensor) -> torch.Tensor:
    """[B, N*K] targets: 1 on each image's own prompts and on prompts sharing the text of one of them."""
    device = logits.device
    own_image = torch.arange(batch, device=device) + batch * rank  # global index of each local image
    if prompt_ids is None:
        columns = torch.arange(logits.shape[1], device=device)
        target = (columns // num_prompts)[None, :] == own_image[:, None]
    else:
        ids = prompt_ids.to(device=device, dtype=torch.long)
        target = same_text_columns(ids, gather(ids), own_image).any(dim=1)
    return target.to(logits.dtype)
