"""Image-text contrastive loss against a loop-by-loop reference, in one process and in a simulated 2-rank world."""

from __future__ import annotations

import pytest
import torch

import annofree.losses.contrastive as contrastive
from annofree.losses import all_gather_with_grad, image_text_contrastive_loss, rank_and_world


def reference_contrastive(
    images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, local_rows: range
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE written out sample by sample over a global batch; rows in local_rows are scored."""
    images = images / images.norm(dim=-1, keepdim=True)
    texts = texts / texts.norm(dim=-1, keepdim=True)
    terms = []
    for i in local_rows:
        image_to_texts = torch.stack([scale * (images[i] * texts[j]).sum() for j in range(len(texts))])
        text_to_images = torch.stack([scale * (texts[i] * images[j]).sum() for j in range(len(images))])
        terms.append(-torch.log(image_to_texts[i].exp() / image_to_texts.exp().sum()))
        terms.append(-torch.log(text_to_images[i].exp() / text_to_images.exp().sum()))
    return torch.stack(terms).sum() / (2 * len(local_rows))


def _inputs(batch: int = 5, width: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, width, generator=gen, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(batch, width, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    return images, texts, scale


def _grads(loss: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


def test_single_process_helpers_are_identity() -> None:
    x = torch.randn(3, 4)
    assert rank_and_world() == (0, 1)
    assert all_gather_with_grad(x) is x


def test_matches_reference_loss_and_gradients() -> None:
    images, texts, scale = _inputs()
    loss = image_text_contrastive_loss(images, texts, scale)
    expected = reference_contrastive(images, texts, scale, range(len(images)))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for got, want in zip(_grads(loss, images, texts, scale), _grads(expected, images, texts, scale), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck_inputs_and_scale() -> None:
    images, texts, scale = _inputs(batch=3, width=4, seed=1)
    assert torch.autograd.gradcheck(image_text_contrastive_loss, (images, texts, scale))


def test_invariant_to_the_norm_of_embeddings() -> None:
    images, texts, scale = _inputs(seed=2)
    row_scales = torch.rand(len(images), 1, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(
        image_text_contrastive_loss(images * row_scales, texts / row_scales.flip(0), scale),
        image_text_contrastive_loss(images, texts, scale),
        rtol=1e-12,
        atol=0,
    )


def test_perfectly_aligned_pairs_at_high_scale_give_near_zero_loss() -> None:
    texts = torch.eye(4, dtype=torch.float64)
    low = image_text_contrastive_loss(texts * 3.0, texts, 100.0)
    assert low < 1e-20
    shuffled = image_text_contrastive_loss(texts.roll(1, dims=0), texts, 100.0)
    assert shuffled > 50


def test_accepts_float_scale_and_rejects_mismatched_shapes() -> None:
    images, texts, _ = _inputs()
    torch.testing.assert_close(
        image_text_contrastive_loss(images, texts, 3.0),
        image_text_contrastive_loss(images, texts, torch.tensor(3.0, dtype=torch.float64)),
    )
    with pytest.raises(ValueError, match="image_emb and text_emb"):
        image_text_contrastive_loss(images, texts[:-1], 3.0)


def _other_rank(x: torch.Tensor) -> torch.Tensor:
    """Stand-in for another rank's features: a fixed, different, gradient-free tensor of the same shape."""
    return x.detach().roll(1, dims=-1)


@pytest.mark.parametrize("rank", [0, 1])
def test_simulated_two_rank_world_uses_global_negatives_and_offset_labels(monkeypatch, rank: int) -> None:
    """The local batch sits at slice ``rank`` of the global one; positives are at ``B * rank + i``."""

    def fake_gather(x: torch.Tensor) -> torch.Tensor:
        parts = [_other_rank(x), _other_rank(x)]
        parts[rank] = x
        return torch.cat(parts)

    monkeypatch.setattr(contrastive, "rank_and_world", lambda: (rank, 2))
    monkeypatch.setattr(contrastive, "all_gather_with_grad", fake_gather)
    images, texts, scale = _inputs(batch=4)
    loss = image_text_contrastive_loss(images, texts, scale)

    def global_batch(x: torch.Tensor) -> torch.Tensor:
        x = x / x.norm(dim=-1, keepdim=True)
        return fake_gather(x)

    batch = len(images)
    expected = reference_contrastive(
        global_batch(images), global_batch(texts), scale, range(batch * rank, batch * (rank + 1))
    )
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for got, want in zip(_grads(loss, images, texts, scale), _grads(expected, images, texts, scale), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

    local_only = image_text_contrastive_loss(images, texts, scale, gather_distributed=False)
    torch.testing.assert_close(
        local_only, reference_contrastive(images, texts, scale, range(batch)), rtol=1e-12, atol=0
    )
