"""Sigmoid multi-label loss against a loop-written reference; targets, shapes and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from annofree.losses import multi_label_sigmoid_loss


def reference_sigmoid(images, prompts, scale, bias, ids=None) -> torch.Tensor:
    """Every (image, prompt) pair as its own logistic term, written with Python loops; images [B, C],
    prompts [B, K, C], ids [B, K] (or None)."""
    batch, num_prompts, _ = prompts.shape
    total = torch.zeros((), dtype=images.dtype)
    for i in range(batch):
        image = images[i] / images[i].norm()
        own_ids = set() if ids is None else {int(v) for v in ids[i] if v >= 0}
        for j in range(batch):
            for k in range(num_prompts):
                prompt = prompts[j, k] / prompts[j, k].norm()
                positive = j == i or (ids is not None and int(ids[j, k]) in own_ids)
                logit = scale * image @ prompt + bias
                # -log sigmoid(x) for a positive, -log(1 - sigmoid(x)) = -log sigmoid(-x) for a negative
                total = total - torch.nn.functional.logsigmoid(logit if positive else -logit)
    return total / batch


def _inputs(batch: int = 4, prompts: int = 3, width: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, width, generator=gen, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(batch, prompts, width, generator=gen, dtype=torch.float64, requires_grad=True)
    return images, texts


IDS = torch.tensor([[0, 1, 2], [0, 3, 4], [5, 6, 7], [1, 8, -1]])  # 0 twice, 1 twice, -1 padding


@pytest.mark.parametrize("ids", [None, IDS])
def test_matches_the_loop_reference_with_gradients(ids) -> None:
    images, prompts = _inputs()
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    got = multi_label_sigmoid_loss(images, prompts, scale, bias, prompt_ids=ids)
    want = reference_sigmoid(images, prompts, scale, bias, ids)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got, (images, prompts, scale, bias))
    want_grads = torch.autograd.grad(want, (images, prompts, scale, bias))
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


def test_same_text_prompts_of_other_images_are_positives() -> None:
    # Two images and their one prompt each, all the same unit vector, the two prompts sharing the text id 0.
    # Every pair then has logit 50 - 25 = +25: right for a positive (cost ~0), wrong for a negative
    # (cost softplus(25) ~ 25). With ids all four pairs are positives; without, the two cross pairs are negatives.
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    prompts = images[:, None].clone()
    with_ids = multi_label_sigmoid_loss(images, prompts, 50.0, -25.0, prompt_ids=torch.tensor([[0], [0]]))
    without = multi_label_sigmoid_loss(images, prompts, 50.0, -25.0)
    assert with_ids.item() < 1e-9
    assert without.item() == pytest.approx(2 * math.log1p(math.exp(25.0)) / 2, rel=1e-9)


def test_a_caption_stand_in_is_positive_for_its_own_image_only() -> None:
    images, prompts = _inputs(batch=2, prompts=2)
    ids = torch.tensor([[-1, 4], [-1, 5]])  # both pad with id -1: must not make them "the same text"
    got = multi_label_sigmoid_loss(images, prompts, 5.0, -1.0, prompt_ids=ids)
    torch.testing.assert_close(got, reference_sigmoid(images, prompts, 5.0, -1.0, ids))
    torch.testing.assert_close(got, multi_label_sigmoid_loss(images, prompts, 5.0, -1.0))


def test_accepts_image_embeddings_with_a_singleton_axis() -> None:
    images, prompts = _inputs()
    flat = multi_label_sigmoid_loss(images, prompts, 5.0, -1.0)
    torch.testing.assert_close(multi_label_sigmoid_loss(images[:, None], prompts, 5.0, -1.0), flat)


@pytest.mark.parametrize(
    ("images", "prompts", "ids", "message"),
    [
        (torch.randn(4, 6), torch.randn(3, 2, 6), None, "image_emb must be"),
        (torch.randn(4, 6), torch.randn(4, 2, 5), None, "width"),
        (torch.randn(4, 6), torch.randn(4, 2, 6), torch.zeros(4, 3, dtype=torch.long), "prompt_ids must be"),
    ],
)
def test_rejects_mismatched_shapes(images, prompts, ids, message) -> None:
    with pytest.raises(ValueError, match=message):
        multi_label_sigmoid_loss(images, prompts, 5.0, -1.0, prompt_ids=ids)
