"""Multi-label contrastive loss against dense, loop-built soft targets; K = 1 and same-text options."""

from __future__ import annotations

import pytest
import torch

import annofree.losses.multi_label as multi_label
from annofree.losses import image_text_contrastive_loss, multi_label_contrastive_loss


def reference_multi_label(
    images: torch.Tensor,
    prompts: torch.Tensor,
    scale: torch.Tensor,
    local_rows: range,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss written out with dense target vectors built in loops.

    images [N, C] and prompts [N*K, C] (row i*K + k = prompt k of caption i) are the global batch, already in
    the order of the ranks; ids [N, K], when given, turns on same-text positives.
    """
    num_captions = len(images)
    num_prompts = len(prompts) // num_captions
    images = images / images.norm(dim=-1, keepdim=True)
    prompts = prompts / prompts.norm(dim=-1, keepdim=True)
    flat_ids = None if ids is None else ids.flatten().tolist()

    def same_text(column: int, caption: int, k: int) -> bool:
        """Does global prompt ``column`` count as prompt k of ``caption``?"""
        if column == caption * num_prompts + k:
            return True
        return flat_ids is not None and ids[caption, k] >= 0 and flat_ids[column] == ids[caption, k]

    image_terms, prompt_terms = [], []
    for i in local_rows:
        log_p = torch.log_softmax(scale * prompts @ images[i], dim=0)  # over all N*K prompts
        target = torch.zeros(len(prompts), dtype=images.dtype)
        for k in range(num_prompts):
            matches = [c for c in range(len(prompts)) if same_text(c, i, k)]
            for c in matches:
                target[c] += 1 / (num_prompts * len(matches))
        assert abs(target.sum().item() - 1) < 1e-12
        image_terms.append(-(target * log_p).sum())

        for k in range(num_prompts):
            log_p = torch.log_softmax(scale * images @ prompts[i * num_prompts + k], dim=0)  # over all N images
            owners = [
                m for m in range(num_captions) if any(same_text(m * num_prompts + j, i, k) for j in range(num_prompts))
            ]
            target = torch.zeros(num_captions, dtype=images.dtype)
            target[owners] = 1 / len(owners)
            prompt_terms.append(-(target * log_p).sum())
    return 0.5 * (torch.stack(image_terms).mean() + torch.stack(prompt_terms).mean())


def _inputs(batch: int = 4, prompts: int = 3, width: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, width, generator=gen, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(batch, prompts, width, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    return images, texts, scale


def _assert_same_loss_and_grads(loss: torch.Tensor, expected: torch.Tensor, *inputs: torch.Tensor) -> None:
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    got = torch.autograd.grad(loss, inputs)
    want = torch.autograd.grad(expected, inputs)
    for name, g, w in zip(["images", "prompts", "scale"], got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_matches_reference_loss_and_gradients() -> None:
    images, prompts, scale = _inputs()
    loss = multi_label_contrastive_loss(images, prompts, scale)
    expected = reference_multi_label(images, prompts.flatten(0, 1), scale, range(len(images)))
    _assert_same_loss_and_grads(loss, expected, images, prompts, scale)


def test_image_may_carry_a_singleton_token_axis() -> None:
    images, prompts, scale = _inputs(seed=1)
    torch.testing.assert_close(
        multi_label_contrastive_loss(images[:, None], prompts, scale),
        multi_label_contrastive_loss(images, prompts, scale),
        rtol=0,
        atol=0,
    )


def test_gradcheck_inputs_and_scale() -> None:
    images, prompts, scale = _inputs(batch=3, prompts=2, width=4, seed=2)
    assert torch.autograd.gradcheck(multi_label_contrastive_loss, (images, prompts, scale))


def test_invariant_to_the_norm_of_embeddings() -> None:
    images, prompts, scale = _inputs(seed=3)
    gen = torch.Generator().manual_seed(9)
    image_norms = torch.rand(len(images), 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    prompt_norms = torch.rand(*prompts.shape[:2], 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(
        multi_label_contrastive_loss(images * image_norms, prompts * prompt_norms, scale),
        multi_label_contrastive_loss(images, prompts, scale),
        rtol=1e-12,
        atol=0,
    )


def test_one_prompt_per_caption_is_the_image_text_contrastive_loss() -> None:
    images, prompts, scale = _inputs(prompts=1, seed=4)
    loss = multi_label_contrastive_loss(images, prompts, scale)
    expected = image_text_contrastive_loss(images, prompts[:, 0], scale)
    _assert_same_loss_and_grads(loss, expected, images, prompts, scale)


def test_image_target_spreads_over_its_own_prompts() -> None:
    """An image equidistant to its own K prompts and far from all others reaches the entropy floor log K."""
    basis = torch.eye(6, dtype=torch.float64)
    images = basis[:2]  # image 0 along e0, image 1 along e1
    prompts = torch.stack([basis[[0, 0, 0]] + basis[[2, 3, 4]] * 1e-9, basis[[1, 1, 1]] + basis[[3, 4, 5]] * 1e-9])
    loss = multi_label_contrastive_loss(images, prompts, 100.0)
    # image -> prompts: -sum 1/3 log(1/3) = log 3; prompt -> image: ~0.
    torch.testing.assert_close(loss, 0.5 * torch.log(torch.tensor(3.0, dtype=torch.float64)), rtol=1e-6, atol=0)


def test_rejects_bad_shapes() -> None:
    images, prompts, scale = _inputs()
    with pytest.raises(ValueError, match="prompt_emb"):
        multi_label_contrastive_loss(images, prompts[:, 0], scale)
    with pytest.raises(ValueError, match="width"):
        multi_label_contrastive_loss(images[:, :-1], prompts, scale)
    with pytest.raises(ValueError, match="prompt_ids"):
        multi_label_contrastive_loss(images, prompts, scale, same_text_positive=True)
    with pytest.raises(ValueError, match="prompt_ids"):
        multi_label_contrastive_loss(images, prompts, scale, prompt_ids=torch.zeros(4, 2), same_text_positive=True)


# Captions 0 and 2 share text 7; caption 3 has text 1 twice (e.g. the same noun in two templates' ids);
# -1 marks padding prompts that never match anything, even each other.
DUPLICATE_IDS = torch.tensor([[7, 1, 2], [3, 4, -1], [5, 7, 6], [1, 1, -1]])


def test_same_text_positive_matches_reference() -> None:
    images, prompts, scale = _inputs()
    loss = multi_label_contrastive_loss(images, prompts, scale, prompt_ids=DUPLICATE_IDS, same_text_positive=True)
    expected = reference_multi_label(images, prompts.flatten(0, 1), scale, range(len(images)), ids=DUPLICATE_IDS)
    _assert_same_loss_and_grads(loss, expected, images, prompts, scale)
    default = multi_label_contrastive_loss(images, prompts, scale)
    assert not torch.allclose(loss, default)


def test_same_text_positive_with_distinct_texts_is_the_default_loss() -> None:
    images, prompts, scale = _inputs(seed=5)
    distinct = torch.arange(12).view(4, 3)
    padding = torch.full((4, 3), -1)
    for ids in (distinct, padding):
        default = multi_label_contrastive_loss(images, prompts, scale)
        loss = multi_label_contrastive_loss(images, prompts, scale, prompt_ids=ids, same_text_positive=True)
        _assert_same_loss_and_grads(loss, default, images, prompts, scale)
    # Ids are ignored unless the option is on.
    ignored = multi_label_contrastive_loss(images, prompts, scale, prompt_ids=DUPLICATE_IDS)
    torch.testing.assert_close(ignored, multi_label_contrastive_loss(images, prompts, scale), rtol=0, atol=0)


def test_same_text_positive_stops_pushing_an_image_away_from_its_own_text() -> None:
    """Image 0's text 7 is also caption 2's prompt 1: the reference maths repels the two, the option attracts them."""
    _, prompts, scale = _inputs(width=64, seed=6)  # wide: random prompts are nearly orthogonal to the images
    # Orthonormal images: moving a prompt towards or away from one image barely changes its cosine to another.
    images = torch.eye(64, dtype=torch.float64)[:4]
    cosine = torch.cosine_similarity(images[0].detach(), prompts[2, 1], dim=0)
    (towards_image,) = torch.autograd.grad(cosine, prompts)
    for same_text, expected_sign in ((False, -1.0), (True, 1.0)):
        loss = multi_label_contrastive_loss(
            images, prompts, scale, prompt_ids=DUPLICATE_IDS, same_text_positive=same_text
        )
        (grad,) = torch.autograd.grad(loss, prompts)
        # First-order change of that cosine under a gradient-descent step on the prompts.
        change = -(grad * towards_image).sum()
        assert torch.sign(change).item() == expected_sign, f"same_text_positive={same_text}: change {change.item()}"


def _other_rank(x: torch.Tensor) -> torch.Tensor:
    """Stand-in for another rank's tensor: fixed, different, gradient-free, same shape (ids keep their values)."""
    return x.detach().roll(1, dims=-1)


@pytest.mark.parametrize("same_text", [False, True])
@pytest.mark.parametrize("rank", [0, 1])
def test_simulated_two_rank_world(monkeypatch, rank: int, same_text: bool) -> None:
    """Global indices of the own prompts and images are offset by B * rank; ids match across ranks."""

    def fake_gather(x: torch.Tensor) -> torch.Tensor:
        parts = [_other_rank(x), _other_rank(x)]
        parts[rank] = x
        return torch.cat(parts)

    monkeypatch.setattr(multi_label, "rank_and_world", lambda: (rank, 2))
    monkeypatch.setattr(multi_label, "all_gather_with_grad", fake_gather)
    images, prompts, scale = _inputs(seed=7)
    ids = DUPLICATE_IDS if same_text else None
    loss = multi_label_contrastive_loss(images, prompts, scale, prompt_ids=ids, same_text_positive=same_text)

    normalise = lambda x: x / x.norm(dim=-1, keepdim=True)
    batch = len(images)
    expected = reference_multi_label(
        fake_gather(normalise(images)),
        fake_gather(normalise(prompts).flatten(0, 1)),
        scale,
        range(batch * rank, batch * (rank + 1)),
        ids=None if ids is None else fake_gather(ids),
    )
    _assert_same_loss_and_grads(loss, expected, images, prompts, scale)
