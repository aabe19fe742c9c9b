"""RegionSim's InfoNCE among the regions of one image (the official "kernel contrast" loss).

For each image, region ``k`` of view 1 (its prediction ``p1[b, k]``) must pick region ``k`` of view 2
(the target ``z2[b, k]``) among all ``K`` regions of view 2 of the SAME image; the other regions of that
image are the negatives (no negatives from other images). Symmetric over the two views:

    L = 0.5 * [CE(p1 . z2^T / t, diag) + CE(p2 . z1^T / t, diag)]

averaged over images and regions, with L2-normalised embeddings (the released ``kernel_norm=True``) and
temperature ``t = 0.1``. The official code does NOT detach the target here (negatives keep InfoNCE from
collapsing); ``detach_target=True`` gives the stop-gradient form.

Example:
    >>> import torch
    >>> z = torch.eye(3).expand(2, 3, 3)  # 2 images, 3 orthogonal regions
    >>> round(float(region_infonce(z, z, z, z)), 4)  # -log(e^10 / (e^10 + 2))
    0.0001
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from annofree.losses.siamese import masked_mean


def region_infonce(
    p1: torch.Tensor,
    z1: torch.Tensor,
    p2: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    normalize: bool = True,
    detach_target: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric per-image region InfoNCE.

    Args:
        p1, z1: ``[B, K, D]`` predictions and projections of the K regions of view 1.
        p2, z2: the same for view 2; region ``k`` of view 2 is the positive of region ``k`` of view 1.
        temperature: divides the similarities (0.1).
        normalize: L2-normalise every embedding first (cosine similarities).
        detach_target: stop the gradient through ``z1``, ``z2``.
        mask: ``[B]`` bool, the images to average over (e.g. views that overlap); 0 when none is valid.

    Returns:
        The scalar loss.
    """
    for name, t in (("z1", z1), ("p2", p2), ("z2", z2)):
        if t.shape != p1.shape:
            raise ValueError(f"{name} {tuple(t.shape)} must match p1 {tuple(p1.shape)}")
    if p1.ndim != 3:
        raise ValueError(f"expected [B, K, D] region embeddings, got {tuple(p1.shape)}")
    per_image = 0.5 * (
        _one_direction(p1, z2, temperature, normalize, detach_target)
        + _one_direction(p2, z1, temperature, normalize, detach_target)
    )
    return masked_mean(per_image, mask)


def _one_direction(p: torch.Tensor, z: torch.Tensor, temperature: float, normalize: bool, detach: bool) -> torch.Tensor:
    if detach:
        z = z.detach()
    if normalize:
        p, z = F.normalize(p, dim=-1), F.normalize(z, dim=-1)
    logits = torch.einsum("bkd,bmd->bkm", p, z) / temperature  # [B, K, K]: region k of p vs all regions of z
    return -logits.log_softmax(dim=-1).diagonal(dim1=-2, dim2=-1).mean(dim=-1)  # [B]


__all__ = ["region_infonce"]
