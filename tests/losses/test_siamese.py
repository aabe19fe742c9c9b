"""SimSiam-style losses: values by hand, stop-gradient, masks without NaN, self-labelling, auto weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from annofree.losses.siamese import (
    aux_loss_weights,
    ce_similarity,
    masked_mean,
    negative_cosine,
    self_label_loss,
    symmetric_similarity_loss,
)


def test_negative_cosine_by_hand() -> None:
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    # cosines 1 and 1/sqrt(2)
    torch.testing.assert_close(negative_cosine(p, z), torch.tensor(-(1 + 1 / math.sqrt(2)) / 2))
    # the same pairs as [B, N, C] points with channels last
    torch.testing.assert_close(negative_cosine(p[None], z[None], dim=-1), negative_cosine(p, z))


def test_ce_similarity_by_hand() -> None:
    p = torch.tensor([[0.0, 0.0]])  # log_softmax = [-ln2, -ln2]
    z = torch.tensor([[math.log(3.0), 0.0]])  # softmax = [3/4, 1/4]
    torch.testing.assert_close(ce_similarity(p, z), torch.tensor(math.log(2.0)))
    p2 = torch.tensor([[math.log(3.0), 0.0]])  # p == z: the loss is the entropy of [3/4, 1/4]
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(ce_similarity(p2, z), torch.tensor(entropy))


def test_dense_forms_average_over_pixels() -> None:
    torch.manual_seed(0)
    p, z = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    per_pixel = -F.cosine_similarity(p, z, dim=1)
    torch.testing.assert_close(negative_cosine(p, z), per_pixel.mean())
    ce = -(z.softmax(1) * p.log_softmax(1)).sum(1)
    torch.testing.assert_close(ce_similarity(p, z), ce.mean())


@pytest.mark.parametrize("similarity", ["cosine", "ce"])
def test_symmetric_form_and_stop_gradient(similarity: str) -> None:
    torch.manual_seed(0)
    x1 = torch.randn(2, 4, 3, 3, requires_grad=True)
    x2 = torch.randn(2, 4, 3, 3, requires_grad=True)
    z1, z2 = x1 * 2, x2 * 2  # "projections" of each view
    p1, p2 = z1 + 1, z2 - 1  # "predictions" built on them
    loss = symmetric_similarity_loss(p1, z1, p2, z2, similarity=similarity)
    fn = negative_cosine if similarity == "cosine" else ce_similarity
    torch.testing.assert_close(loss, 0.5 * (fn(p1, z2) + fn(p2, z1)))
    # gradient reaches the inputs only through p: the target branch z gets nothing
    z1_leaf = z1.detach().requires_grad_()
    z2_leaf = z2.detach().requires_grad_()
    p1_leaf, p2_leaf = (z1_leaf + 1).detach().requires_grad_(), (z2_leaf - 1).detach().requires_grad_()
    symmetric_similarity_loss(p1_leaf, z1_leaf, p2_leaf, z2_leaf, similarity=similarity).backward()
    assert z1_leaf.grad is None and z2_leaf.grad is None
    assert p1_leaf.grad.abs().sum() > 0 and p2_leaf.grad.abs().sum() > 0


def test_mask_selects_pairs_and_empty_mask_is_zero_without_nan() -> None:
    p = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]], requires_grad=True)  # [1, 2, 1, 2]: two pixels
    z = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]]]])  # pixel 1 of z is opposite to p's
    only_first = torch.tensor([[[True, False]]])
    torch.testing.assert_close(negative_cosine(p, z, mask=only_first), torch.tensor(-1.0))
    nothing = torch.zeros(1, 1, 2, dtype=torch.bool)
    bad = torch.full((1, 2, 1, 2), float("nan"), requires_grad=True)  # garbage where nothing is valid
    for fn in (negative_cosine, ce_similarity):
        loss = fn(p, z, mask=nothing)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.all(p.grad == 0)
        assert fn(bad, z, mask=nothing).item() == 0.0
        p.grad = None
    assert masked_mean(torch.zeros(0)).item() == 0.0
    with pytest.raises(ValueError):
        negative_cosine(p, z, mask=torch.ones(2, dtype=torch.bool))


def test_self_label_loss_by_hand() -> None:
    logits = torch.tensor([[[[2.0, 0.0, 0.0]], [[0.0, 1.0, 3.0]]]], requires_grad=True)  # [1, 2, 1, 3]
    # labels argmax: [0, 1, 1]; CE per pixel: softplus(0 - 2), softplus(0 - 1), softplus(0 - 3)
    ce = F.softplus(torch.tensor([-2.0, -1.0, -3.0]))
    torch.testing.assert_close(self_label_loss(logits), ce.mean())
    # official rebalance: weight = class share (1/3 for class 0, 2/3 for class 1)
    w = torch.tensor([1 / 3, 2 / 3, 2 / 3])
    torch.testing.assert_close(self_label_loss(logits, reweight="frequency"), (w * ce).mean())
    # inverse: each present class counts equally -> mean of per-class means
    torch.testing.assert_close(self_label_loss(logits, reweight="inverse"), 0.5 * (ce[0] + ce[1:].mean()))
    # mask drops pixel 2 from the mean and from the counts
    mask = torch.tensor([[[True, True, False]]])
    torch.testing.assert_close(self_label_loss(logits, mask=mask), ce[:2].mean())
    torch.testing.assert_close(self_label_loss(logits, reweight="frequency", mask=mask), (0.5 * ce[:2]).mean())
    with pytest.raises(ValueError):
        self_label_loss(logits, reweight="nope")  # type: ignore[arg-type]


def test_self_label_loss_takes_labels_from_a_detached_target() -> None:
    logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    target = torch.tensor([[[[0.0]], [[5.0]]]], requires_grad=True)  # says class 1
    loss = self_label_loss(logits, target)
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0)))
    loss.backward()
    assert target.grad is None
    torch.testing.assert_close(logits.grad.flatten(), torch.tensor([0.5, -0.5]))


def test_aux_loss_weights() -> None:
    w_main, w_aux = aux_loss_weights(27, 128)
    assert round(w_aux, 4) == 0.4045 and round(w_main, 4) == 0.5955
    assert w_main + w_aux == pytest.approx(1.0)
    assert aux_loss_weights(10, 10) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError):
        aux_loss_weights(1, 128)
