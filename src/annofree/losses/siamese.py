"""SimSiam-style similarity losses for DenseSiam: stop-gradient on the target, optional validity mask.

Similarities ``D(p, z)`` (lower is better) between a prediction ``p`` and a target ``z``; the target is
always detached here (``sg(z)``), so no gradient reaches the target branch through these losses:

- :func:`negative_cosine`: ``-cos(p, sg(z))`` (SimSiam).
- :func:`ce_similarity`: ``-sum_c softmax(sg(z))_c * log_softmax(p)_c`` (DenseSiam's PixSim on cluster
  logits; the official ``CESimilarity``).

Both reduce over the channel axis ``dim`` and average over every other position: ``[B, C]`` (global),
``[B, C, H, W]`` (dense, ``dim=1``) or ``[B, N, C]`` sampled points (``dim=-1``). A boolean ``mask``
shaped like the positions (``[B]``, ``[B, H, W]``, ``[B, N]``) keeps only valid pairs (e.g. inside the
overlap of two views); the mean is over valid positions of the whole batch, and with none valid the loss
is 0 (not NaN) and gives zero gradients.

:func:`symmetric_similarity_loss` is ``0.5 * [D(p1, z2) + D(p2, z1)]``. :func:`self_label_loss` is the
segmentation loss of the released config, and :func:`aux_loss_weights` the "auto" weights of the
over-clustering head.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Similarity = Literal["cosine", "ce"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is True (all when None); 0 when there are none.

    ``torch.where`` rather than multiplication, so that non-finite values at masked positions cannot leak
    into the result.
    """
    if mask is None:
        return values.sum() / max(values.numel(), 1)
    if mask.shape != values.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the positions' shape {tuple(values.shape)}")
    mask = mask.to(device=values.device, dtype=torch.bool)
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / mask.sum().clamp(min=1)


def negative_cosine(p: torch.Tensor, z: torch.Tensor, dim: int = 1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(-cos(p, sg(z)))`` over positions; ``p``, ``z``: same shape, channels on ``dim``. Range [-1, 1]."""
    _check_pair(p, z)
    return masked_mean(-F.cosine_similarity(p, z.detach(), dim=dim), mask)


def ce_similarity(p: torch.Tensor, z: torch.Tensor, dim: int = 1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(-sum_c softmax(sg(z))_c * log_softmax(p)_c)`` over positions; channels (logits) on ``dim``.

    The cross-entropy of ``p``'s distribution against ``z``'s; its minimum is the entropy of ``softmax(z)``.
    """
    _check_pair(p, z)
    per_position = -(F.softmax(z.detach(), dim=dim) * F.log_softmax(p, dim=dim)).sum(dim=dim)
    return masked_mean(per_position, mask)


def symmetric_similarity_loss(
    p1: torch.Tensor,
    z1: torch.Tensor,
    p2: torch.Tensor,
    z2: torch.Tensor,
    similarity: Similarity = "cosine",
    dim: int = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``0.5 * [D(p1, z2) + D(p2, z1)]`` for views 1 and 2 whose positions correspond one to one.

    Args:
        p1, z1: prediction and projection of view 1 (``[B, C]``, ``[B, C, H, W]`` or ``[B, N, C]``).
        p2, z2: the same for view 2, aligned with view 1 position by position.
        similarity: ``"cosine"`` (:func:`negative_cosine`) or ``"ce"`` (:func:`ce_similarity`).
        dim: the channel axis.
        mask: valid positions shared by both directions (positions without dim), or None.
    """
    fn = {"cosine": negative_cosine, "ce": ce_similarity}[similarity]
    return 0.5 * (fn(p1, z2, dim=dim, mask=mask) + fn(p2, z1, dim=dim, mask=mask))


def self_label_loss(
    logits: torch.Tensor,
    target: torch.Tensor | None = None,
    reweight: Literal["frequency", "inverse"] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the hard labels ``argmax(sg(target))`` (self-labelling).

    Args:
        logits: ``[B, K, H, W]`` (or ``[B, K]``, ``[B, K, N]``): classes on dim 1.
        target: logits giving the pseudo-labels, same shape; None uses ``logits`` itself (the official
            ``loss_seg`` pairs each view with itself; pass the other view's aligned logits for the
            cross-view form).
        reweight: per-class weights from the label counts of the (valid) batch pixels:
            ``"frequency"`` is the released ``rebalance_seg=True``: weight = the class's share of the
            pixels, so FREQUENT clusters weigh more and the loss is about ``1/K`` of the plain one;
            ``"inverse"`` gives each present class equal total weight (the mean of per-class means).
        mask: ``[B, H, W]`` valid positions or None.
    """
    labels = (logits if target is None else target).detach().argmax(dim=1)
    per_position = F.cross_entropy(logits, labels, reduction="none")
    if reweight is not None:
        per_position = per_position * _class_weights(labels, logits.shape[1], reweight, mask)[labels]
    return masked_mean(per_position, mask)


def _class_weights(labels: torch.Tensor, num_classes: int, mode: str, mask: torch.Tensor | None) -> torch.Tensor:
    counted = labels if mask is None else labels[mask.to(device=labels.device, dtype=torch.bool)]
    counts = torch.bincount(counted.reshape(-1), minlength=num_classes).float()
    freq = counts / counts.sum().clamp(min=1)
    if mode == "frequency":
        return freq
    if mode == "inverse":
        present = (counts > 0).sum().clamp(min=1)
        return torch.where(counts > 0, 1.0 / (present * freq).clamp(min=1e-12), torch.zeros_like(freq))
    raise ValueError(f"reweight must be None, 'frequency' or 'inverse', got {mode!r}")


def aux_loss_weights(num_classes: int, num_aux_classes: int) -> tuple[float, float]:
    """The "auto" weights ``(w_main, w_aux)`` of the main head and the over-clustering head.

    ``w_aux = ln K / (ln K_aux + ln K)`` and ``w_main = ln K_aux / (ln K_aux + ln K)`` (they sum to 1):
    the CE similarity grows like ``ln`` of the number of clusters, so each head is scaled by the other's
    log. K=27, K_aux=128 -> (0.5955, 0.4045).
    """
    if num_classes < 2 or num_aux_classes < 2:
        raise ValueError(f"need at least 2 clusters per head, got {num_classes} and {num_aux_classes}")
    log_main, log_aux = math.log(num_classes), math.log(num_aux_classes)
    return log_aux / (log_aux + log_main), log_main / (log_aux + log_main)


def _check_pair(p: torch.Tensor, z: torch.Tensor) -> None:
    if p.shape != z.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(z.shape)} must have the same shape")


__all__ = [
    "aux_loss_weights",
    "ce_similarity",
    "masked_mean",
    "negative_cosine",
    "self_label_loss",
    "symmetric_similarity_loss",
]
