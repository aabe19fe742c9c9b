"""Where two augmented views of one image show the same place: the two DenseSiam alignment modes.

Coordinates. A view is described by its crop box ``(x0, y0, x1, y1)`` in the ORIGINAL image's continuous pixel
coordinates (pixel ``(row i, column j)`` covers ``[j, j + 1] x [i, i + 1]``, its centre is ``(j + 0.5, i + 0.5)``,
the whole ``H x W`` image is the box ``(0, 0, W, H)``) and its flip flags (the crop was mirrored after resizing):
``flips [B]`` bool for left-right only, or ``[B, 2]`` bool for (left-right, top-bottom). A dense map
``[B, C, h, w]`` computed from a view (the view itself, or a network's output at any stride) is taken to cover
the view evenly: cell ``(i, j)`` stands for the view fraction ``[j / w, (j + 1) / w] x [i / h, (i + 1) / h]``,
centred at ``((j + 0.5) / w, (i + 0.5) / h)``. That is exactly ``grid_sample``'s ``align_corners=False``
convention, which is used throughout: with it a normalised coordinate means the same place in the view whatever
the map's resolution, so a stride-4 feature map and the view image are sampled with the same grid.
(``align_corners=True`` would pin the first and last cell centres to the view's edges and make the same point
land at resolution-dependent places.)

Two modes:

* Overlap grid sampling (the paper's pre-training mode, :func:`sample_overlap`): the overlap of the two crop
  boxes, a ``K x K`` grid of cell centres inside it, each point mapped into each view's own normalised
  coordinates (flip included), and bilinear sampling of both views' dense outputs there, so that the sampled
  vectors correspond one to one.
* Equivariant replay crop (the released segmentation mode, :func:`replay_crop`): view 1 is a random crop and
  flip of the common image, view 2 the whole common image; view 1's relative crop and flip are replayed on
  view 2's FEATURE map (crop + resize + flip, done as one bilinear ``grid_sample``), so every position of the
  result corresponds to the same position of view 1's feature map.

Sampling uses ``padding_mode="border"``: points within half a cell of a map's edge take the edge value rather
than fading towards zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flip_axes(flips: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``flips [B]`` (left-right) or ``[B, 2]`` (left-right, top-bottom) -> (left-right ``[B]``, top-bottom ``[B]``)."""
    flips = flips.to(device=device, dtype=torch.bool)
    if flips.ndim == 1:
        return flips, torch.zeros_like(flips)
    if flips.ndim != 2 or flips.shape[1] != 2:
        raise ValueError(f"flips must be [B] or [B, 2], got {list(flips.shape)}")
    return flips[:, 0], flips[:, 1]


def view_points(boxes: torch.Tensor, flips: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Original-image coordinates of the cell centres of an ``h x w`` map covering each view.

    ``boxes [B, 4]`` (x0, y0, x1, y1), ``flips [B]`` or ``[B, 2]`` bool, ``size = (h, w)`` -> ``[B, h, w, 2]``
    as (x, y).
    """
    h, w = size
    boxes = boxes.float()
    device = boxes.device
    tx = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w  # [w], fraction across the view
    ty = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h  # [h]
    flip_x, flip_y = flip_axes(flips, device)
    tx = torch.where(flip_x[:, None], 1.0 - tx, tx)  # [B, w]: a flipped view shows the crop mirrored
    ty = torch.where(flip_y[:, None], 1.0 - ty, ty)  # [B, h]
    x = boxes[:, 0:1] + tx * (boxes[:, 2:3] - boxes[:, 0:1])  # [B, w]
    y = boxes[:, 1:2] + ty * (boxes[:, 3:4] - boxes[:, 1:2])  # [B, h]
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)


def to_view_grid(points: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Original-image points -> each view's normalised ``grid_sample`` coordinates (``align_corners=False``).

    ``points [B, N, 2]`` (x, y), ``boxes [B, 4]``, ``flips [B]`` or ``[B, 2]`` -> ``[B, N, 2]``; -1 and 1 are the
    view's edges, values outside ``[-1, 1]`` are points outside the view.
    """
    boxes = boxes.float().to(points.device)
    start, extent = boxes[:, None, 0:2], boxes[:, None, 2:4] - boxes[:, None, 0:2]  # [B, 1, 2]
    t = (points.float() - start) / extent  # [B, N, 2], fraction across the view
    flip_x, flip_y = flip_axes(flips, points.device)
    tx = torch.where(flip_x[:, None], 1.0 - t[..., 0], t[..., 0])
    ty = torch.where(flip_y[:, None], 1.0 - t[..., 1], t[..., 1])
    return torch.stack([tx, ty], dim=-1) * 2.0 - 1.0


def sample_points(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a dense map at normalised points.

    ``features [B, C, h, w]``, ``grid [B, N, 2]`` (from :func:`to_view_grid`) -> ``[B, N, C]`` in the features'
    dtype. Sampling runs in float32: bf16 grid coordinates would misplace points by up to a tenth of a cell.
    """
    sampled = F.grid_sample(
        features.float(), grid.float()[:, :, None, :], mode="bilinear", padding_mode="border", align_corners=False
    )  # [B, C, N, 1]
    return sampled[..., 0].transpose(1, 2).to(features.dtype)


def overlap_boxes(
    boxes1: torch.Tensor, boxes2: torch.Tensor, min_size: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The intersection of two views' crop boxes.

    ``boxes1, boxes2 [B, 4]`` -> ``(boxes [B, 4], valid [B] bool)``. ``valid`` is False where the intersection
    is no wider or no taller than ``min_size`` pixels; those rows hold ``boxes1`` instead (finite, non-empty),
    so that everything computed from them stays finite and can simply be masked out.
    """
    boxes1, boxes2 = boxes1.float(), boxes2.float().to(boxes1.device)
    start = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    end = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    valid = ((end - start) > min_size).all(dim=1)
    boxes = torch.where(valid[:, None], torch.cat([start, end], dim=1), boxes1)
    return boxes, valid


def overlap_grid(
    boxes1: torch.Tensor, boxes2: torch.Tensor, k: int, min_size: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``k x k`` grid of points inside the overlap of two views, in original-image coordinates.

    The points are the centres of a ``k x k`` split of the overlap box (so none lies on its edge), row-major:
    ``boxes1, boxes2 [B, 4]`` -> ``(points [B, k * k, 2] as (x, y), valid [B])``. See :func:`overlap_boxes` for
    ``valid`` and ``min_size``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    boxes, valid = overlap_boxes(boxes1, boxes2, min_size)
    no_flip = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    return view_points(boxes, no_flip, (k, k)).flatten(1, 2), valid


def sample_overlap(
    features1: torch.Tensor,
    features2: torch.Tensor,
    boxes1: torch.Tensor,
    flips1: torch.Tensor,
    boxes2: torch.Tensor,
    flips2: torch.Tensor,
    k: int,
    min_size: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlap grid sampling: the two views' dense outputs at the same ``k x k`` places of the overlap.

    ``features1 [B, C, h1, w1]`` and ``features2 [B, C, h2, w2]`` (any resolutions) computed from views with
    crop boxes ``boxes1, boxes2 [B, 4]`` and flips ``flips1, flips2 [B]`` or ``[B, 2]`` -> ``(f1 [B, k * k, C],
    f2 [B, k * k, C], valid [B] bool)``; ``f1[b, n]`` and ``f2[b, n]`` describe the same point of the original
    image. Pairs whose crops do not overlap have ``valid`` False and finite, meaningless rows: weight them 0.
    """
    points, valid = overlap_grid(boxes1, boxes2, k, min_size)
    points = points.to(features1.device)
    f1 = sample_points(features1, to_view_grid(points, boxes1, flips1))
    f2 = sample_points(features2, to_view_grid(points, boxes2, flips2))
    return f1, f2, valid.to(features1.device)


def replay_crop(
    features2: torch.Tensor,
    boxes1: torch.Tensor,
    flips1: torch.Tensor,
    boxes2: torch.Tensor,
    flips2: torch.Tensor,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Equivariant replay crop: view 2's feature map re-cut to view 1's crop and flip.

    ``features2 [B, C, h2, w2]`` computed from view 2 -> ``(aligned [B, C, h, w], inside [B, h, w] bool)`` with
    ``size = (h, w)`` the size of view 1's feature map (default ``(h2, w2)``): ``aligned[b, :, i, j]`` is view 2's
    feature at the place that view 1's feature map shows at ``(i, j)``. It equals cropping the relative box of
    view 1 inside view 2, resizing it to ``size`` (bilinear) and flipping it along each axis where ``flips1``
    differs from ``flips2``. ``inside`` is False at positions that view 2 does not show (only possible when view
    1's box is not inside view 2's; in the released mode view 2 is the whole image and ``inside`` is all True).
    """
    size = tuple(features2.shape[-2:]) if size is None else size
    points = view_points(boxes1.to(features2.device), flips1, size).flatten(1, 2)  # [B, h * w, 2]
    grid = to_view_grid(points, boxes2, flips2)
    aligned = sample_points(features2, grid)  # [B, h * w, C]
    aligned = aligned.transpose(1, 2).reshape(features2.shape[0], -1, *size)
    # A tolerance of a millionth of the view: a point on view 2's edge is inside despite rounding.
    inside = (grid.abs() <= 1.0 + 1e-6).all(dim=-1).reshape(features2.shape[0], *size)
    return aligned, inside
