"""Region InfoNCE: values by hand on tiny tensors, symmetry, normalisation, temperature, stop-gradient option."""

from __future__ import annotations

import math

import pytest
import torch

from annofree.losses.region import region_infonce


def test_by_hand_two_regions() -> None:
    # one image, two regions, 2-d embeddings; view 1 predictions and view 2 targets
    p1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    z2 = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # region 1 of view 2 sits at 45 degrees
    # direction 1->2: region 0: logits [1, 1/sqrt2]/t; region 1: logits [0, 1/sqrt2]/t, positive = index 1
    t, s = 0.1, 1 / math.sqrt(2)
    l0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(s / t)))
    l1 = -math.log(math.exp(s / t) / (math.exp(0.0) + math.exp(s / t)))
    expected = 0.5 * (l0 + l1)
    # view 2 -> view 1 built to be the same pairs (p2 = p1, z1 = z2), so the symmetric loss equals one direction
    loss = region_infonce(p1, z2.clone(), p1.clone(), z2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_negatives_stay_inside_the_image() -> None:
    torch.manual_seed(0)
    p1, z1, p2, z2 = (torch.randn(1, 3, 4) for _ in range(4))
    alone = region_infonce(p1, z1, p2, z2)
    # adding a second image changes nothing for the first: the loss is the mean of per-image losses
    q1, y1, q2, y2 = (torch.randn(1, 3, 4) for _ in range(4))
    other = region_infonce(q1, y1, q2, y2)
    both = region_infonce(torch.cat([p1, q1]), torch.cat([z1, y1]), torch.cat([p2, q2]), torch.cat([z2, y2]))
    torch.testing.assert_close(both, 0.5 * (alone + other))


def test_scale_invariance_temperature_and_symmetry() -> None:
    torch.manual_seed(1)
    p1, z1, p2, z2 = (torch.randn(2, 3, 4) for _ in range(4))
    base = region_infonce(p1, z1, p2, z2)
    torch.testing.assert_close(region_infonce(5 * p1, 0.1 * z1, p2, 3 * z2), base)  # L2-normalised
    torch.testing.assert_close(region_infonce(p2, z2, p1, z1), base)  # symmetric in the views
    assert not torch.allclose(region_infonce(p1, z1, p2, z2, temperature=1.0), base)
    # perfectly separated, orthogonal regions: the loss tends to 0 as the temperature falls
    eye = torch.eye(3).expand(2, 3, 3)
    assert region_infonce(eye, eye, eye, eye, temperature=0.01).item() < 1e-6


def test_gradients_reach_targets_unless_detached() -> None:
    torch.manual_seed(2)
    p1, z1, p2, z2 = (torch.randn(2, 3, 4, requires_grad=True) for _ in range(4))
    region_infonce(p1, z1, p2, z2).backward()
    assert z1.grad.abs().sum() > 0 and p1.grad.abs().sum() > 0  # official: targets not detached
    for t in (p1, z1, p2, z2):
        t.grad = None
    region_infonce(p1, z1, p2, z2, detach_target=True).backward()
    assert z1.grad is None and z2.grad is None and p2.grad.abs().sum() > 0


def test_shape_checks() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError):
        region_infonce(x, x, x, torch.randn(2, 4, 4))
    with pytest.raises(ValueError):
        region_infonce(x[0], x[0], x[0], x[0])


def test_mask_averages_over_the_chosen_images_only() -> None:
    torch.manual_seed(2)
    p1, z1, p2, z2 = (torch.randn(3, 4, 5, requires_grad=True) for _ in range(4))
    keep = torch.tensor([True, False, True])
    masked = region_infonce(p1, z1, p2, z2, mask=keep)
    torch.testing.assert_close(masked, region_infonce(p1[keep], z1[keep], p2[keep], z2[keep]))
    none = region_infonce(p1, z1, p2, z2, mask=torch.zeros(3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and not p1.grad.any()
