"""Differentiable all-gather for contrastive losses across data-parallel ranks.

Contrastive losses want every sample's negatives from the whole global batch, not only from the
local one. Each rank gathers the other ranks' embeddings; the gradient that a rank computes for a
slice belonging to another rank must travel back to that rank, otherwise only the local slice would
learn from the global batch. :func:`all_gather_with_grad` does this: its backward sums, over ranks,
the gradients computed for each slice and hands each rank the sum for its own slice (the semantics
of a reduce-scatter). With DDP averaging parameter gradients over ranks afterwards, the result equals
the gradient of the mean of the per-rank losses, i.e. of one loss on the concatenated batch.

Example:
    >>> import torch
    >>> x = torch.randn(4, 8, requires_grad=True)
    >>> all_gather_with_grad(x).shape  # no process group: identity
    torch.Size([4, 8])
    >>> rank_and_world()
    (0, 1)
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when torch.distributed is not running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather in the forward; all-reduce of the gathered gradient, keeping the own slice, in the backward.

    The backward uses all_reduce + slice rather than reduce_scatter because every backend (gloo included)
    supports all_reduce; the extra traffic is negligible for embedding-sized tensors.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = rank_and_world()
        ctx.rank, ctx.local_size = rank, x.shape[0]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd's buffer must stay untouched
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order), with gradients flowing back to every rank.

    Every rank must call this with a tensor of the same shape and dtype (as ``torch.distributed.all_gather``
    requires). Returns ``x`` itself when torch.distributed is not initialised or the world has one rank.
    Tensors that do not require grad (e.g. integer ids) are gathered the same way, without autograd.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return _AllGatherWithGrad.apply(x)
