"""Multi-label image-text contrastive loss (GroupViT): an image against the K noun prompts of its caption.

Every caption yields K prompts ("a photo of a {noun}."), so each image has K positive texts. Both sides
are L2-normalised and scored against the other side gathered from all ranks, with soft targets:

* image -> prompts: weight 1/K on each of the image's own K prompts, 0 on every other prompt of the
  global batch;
* prompt -> images: weight 1 on the image the prompt came from, 0 on every other image.

The loss is the mean of the two soft cross-entropies (each averaged over its rows: B images,
B*K prompts), at its own temperature (``scale`` = ``exp(multi_label_logit_scale).clamp(max=100)``).
With K = 1 it equals :func:`~annofree.losses.contrastive.image_text_contrastive_loss`.

Same-text positives (``same_text_positive=True``, off by default): captions of a small vocabulary
share nouns, so the prompt "a photo of a dog." of image ``j`` is often the very text that image ``i``
has among its own prompts. The reference maths calls it a negative for image ``i`` and pushes image
``i`` away from a text that describes it: a false negative. Given ``prompt_ids`` (one integer per prompt
naming its text, e.g. a vocabulary index or a hash of the prompt or of its noun), prompts whose id
equals one of an image's own prompt ids become positives of that image as well: the 1/K of each own
prompt is shared evenly among all prompts with that id, and a prompt's target is shared evenly among
all images having a prompt with its id. Negative ids mean "no identity" (e.g. padding with the raw
caption): such a prompt is positive only for its own image, as in the reference.

Example:
    >>> import torch
    >>> images, prompts = torch.randn(4, 16), torch.randn(4, 3, 16)
    >>> loss = multi_label_contrastive_loss(images, prompts, scale=torch.tensor(14.3))
    >>> ids = torch.tensor([[0, 1, 2], [0, 3, 4], [5, 6, 7], [1, 8, -1]])  # texts 0 and 1 appear twice
    >>> dedup = multi_label_contrastive_loss(images, prompts, 14.3, prompt_ids=ids, same_text_positive=True)
    >>> unique = torch.arange(12).view(4, 3)  # all texts distinct: exactly the reference loss
    >>> same = multi_label_contrastive_loss(images, prompts, 14.3, prompt_ids=unique, same_text_positive=True)
    >>> torch.allclose(same, multi_label_contrastive_loss(images, prompts, 14.3))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from annofree.losses.gather import all_gather_with_grad, rank_and_world


def multi_label_contrastive_loss(
    image_emb: torch.Tensor,
    prompt_emb: torch.Tensor,
    scale: torch.Tensor | float,
    prompt_ids: torch.Tensor | None = None,
    same_text_positive: bool = False,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """Soft-target contrastive loss between images and the K prompts of their captions.

    Args:
        image_emb: [B, C] or [B, 1, C] image embeddings (any norm; they are L2-normalised here).
        prompt_emb: [B, K, C] embeddings of the K prompts made from caption ``i``'s nouns.
        scale: the logit multiplier, ``exp(multi_label_logit_scale).clamp(max=100)``; a tensor to learn it.
        prompt_ids: optional [B, K] integer identities of the prompt texts (equal id = same text; negative
            = no identity). Used only when ``same_text_positive`` is True.
        same_text_positive: count prompts identical to one of an image's own prompts (anywhere in the
            global batch) as positives for that image, and vice versa, instead of as negatives.
            False (default) is the reference GroupViT loss.
        gather_distributed: draw negatives from all ranks (the reference behaviour); False keeps them local.

    Returns:
        The scalar loss: mean of the image->prompts and prompts->image soft cross-entropies.
    """
    if same_text_positive and prompt_ids is None:
        raise ValueError("same_text_positive=True needs prompt_ids ([B, K] integer ids of the prompt texts)")
    image_emb = check_prompt_inputs(image_emb, prompt_emb, prompt_ids if same_text_positive else None)

    batch, num_prompts, _ = prompt_emb.shape
    rank, _ = rank_and_world() if gather_distributed else (0, 1)
    gather = all_gather_with_grad if gather_distributed else (lambda x: x)

    image = F.normalize(image_emb, dim=-1)  # [B, C]
    prompts = F.normalize(prompt_emb, dim=-1).flatten(0, 1)  # [B*K, C], row i*K + k = prompt k of caption i
    all_images = gather(image)  # [N, C], N = world * B
    all_prompts = gather(prompts)  # [N*K, C]
    log_p_image = F.log_softmax(scale * image @ all_prompts.t(), dim=-1)  # [B, N*K]
    log_p_prompt = F.log_softmax(scale * prompts @ all_images.t(), dim=-1)  # [B*K, N]

    own_image = torch.arange(batch, device=image.device) + batch * rank  # global index of each local image
    if same_text_positive:
        ids = prompt_ids.to(device=image.device, dtype=torch.long)
        image_target, prompt_target = _same_text_targets(ids, gather(ids), own_image, log_p_image.dtype)
        loss_image = -(image_target * log_p_image).sum(dim=-1).mean()
        loss_prompt = -(prompt_target * log_p_prompt).sum(dim=-1).mean()
    else:
        # Image i's own prompts are the K consecutive global columns of its global index: weight 1/K each.
        own_prompts = log_p_image.view(batch, -1, num_prompts)[torch.arange(batch, device=image.device), own_image]
        loss_image = -own_prompts.mean(dim=-1).mean()
        loss_prompt = F.nll_loss(log_p_prompt, own_image.repeat_interleave(num_prompts))
    return 0.5 * (loss_image + loss_prompt)


def check_prompt_inputs(
    image_emb: torch.Tensor, prompt_emb: torch.Tensor, prompt_ids: torch.Tensor | None
) -> torch.Tensor:
    """Check the shapes shared by the multi-label losses; return the image embeddings as [B, C]."""
    if image_emb.ndim == 3 and image_emb.shape[1] == 1:
        image_emb = image_emb[:, 0]
    if image_emb.ndim != 2 or prompt_emb.ndim != 3 or prompt_emb.shape[0] != image_emb.shape[0]:
        raise ValueError(
            f"image_emb must be [B, C] or [B, 1, C] and prompt_emb [B, K, C]; "
            f"got {tuple(image_emb.shape)} and {tuple(prompt_emb.shape)}"
        )
    if prompt_emb.shape[2] != image_emb.shape[1]:
        raise ValueError(f"image_emb has width {image_emb.shape[1]} but prompt_emb has width {prompt_emb.shape[2]}")
    if prompt_ids is not None and tuple(prompt_ids.shape) != tuple(prompt_emb.shape[:2]):
        raise ValueError(f"prompt_ids must be [B, K] = {tuple(prompt_emb.shape[:2])}; got {tuple(prompt_ids.shape)}")
    return image_emb


def same_text_columns(ids: torch.Tensor, all_ids: torch.Tensor, own_image: torch.Tensor) -> torch.Tensor:
    """``same[i, k, c]``: global prompt ``c`` carries the text of image ``i``'s own prompt ``k`` (always true for
    the prompt itself; never through a negative id).

    Args:
        ids: [B, K] local prompt ids; all_ids: [N, K] gathered ids; own_image: [B] global index of each image.
    """
    num_prompts = ids.shape[1]
    flat_all = all_ids.flatten()  # [N*K]
    columns = torch.arange(flat_all.numel(), device=ids.device)
    own_columns = own_image[:, None] * num_prompts + torch.arange(num_prompts, device=ids.device)  # [B, K]
    same = (ids[:, :, None] == flat_all) & (ids[:, :, None] >= 0)
    return same | (columns == own_columns[:, :, None])


def _same_text_targets(
    ids: torch.Tensor, all_ids: torch.Tensor, own_image: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets when prompts with equal ids count as the same text.

    Args:
        ids: [B, K] local prompt ids; all_ids: [N, K] gathered ids; own_image: [B] global index of each image;
        dtype: the dtype of the targets (that of the logits).

    Returns:
        image_target [B, N*K] (rows sum to 1) and prompt_target [B*K, N] (rows sum to 1).
    """
    num_prompts = ids.shape[1]
    same = same_text_columns(ids, all_ids, own_image)
    # Each own prompt keeps its 1/K, shared evenly among the prompts with its text.
    same = same.to(dtype)
    image_target = (same / same.sum(dim=-1, keepdim=True)).sum(dim=1) / num_prompts  # [B, N*K]

    # Prompt (i, k) is positive for every image owning a prompt with its text, and for its own image.
    flat_ids = ids.flatten()  # [B*K]
    positive = ((flat_ids[:, None, None] == all_ids) & (flat_ids[:, None, None] >= 0)).any(dim=-1)  # [B*K, N]
    images = torch.arange(all_ids.shape[0], device=ids.device)
    positive |= images == own_image.repeat_interleave(num_prompts)[:, None]
    positive = positive.to(dtype)
    prompt_target = positive / positive.sum(dim=-1, keepdim=True)
    return image_target, prompt_target
