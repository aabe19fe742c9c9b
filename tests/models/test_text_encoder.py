"""The text encoder computes only what its pooled features read: up to the batch's last end-of-text token, and
each distinct text once. Both must give the features and gradients of the plain full-length pass."""

from __future__ import annotations

import warnings

import pytest
import torch

from annofree.models import text_encoder
from tests.models.test_groupvit import CONTEXT, tiny_model, token_ids


def short_texts_with_repeats() -> torch.Tensor:
    """[3, 4, CONTEXT]: ends at most at CONTEXT // 2, three rows repeating earlier ones."""
    ids = token_ids(12, length=CONTEXT // 2, seed=7)
    ids = torch.cat([ids, torch.zeros(12, CONTEXT - CONTEXT // 2, dtype=torch.long)], dim=1)
    ids[5], ids[7], ids[9] = ids[0], ids[0], ids[2]
    return ids.view(3, 4, CONTEXT)


def features_and_grads(model, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model.text_features(ids)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.text_encoder.named_parameters() if p.grad is not None}


def rows_and_lengths_seen(model, ids: torch.Tensor) -> tuple[int, int]:
    seen = []
    hook = model.text_encoder.transformer.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape))
    with torch.no_grad():
        model.text_features(ids)
    hook.remove()
    return seen[0][0], seen[0][1]


def test_padding_after_the_last_end_and_repeated_texts_are_not_computed() -> None:
    model = tiny_model().train()
    ids = short_texts_with_repeats()
    last_end = int(ids.argmax(-1).max())
    assert rows_and_lengths_seen(model, ids) == (12 - 3, last_end + 1) and last_end + 1 < CONTEXT


def test_skipping_padding_and_repeats_changes_features_and_gradients_by_rounding_only(monkeypatch) -> None:
    model = tiny_model().train()
    ids = short_texts_with_repeats()
    out, grads = features_and_grads(model, ids)
    monkeypatch.setattr(text_encoder, "shapes_may_follow_values", lambda: False)
    assert rows_and_lengths_seen(model, ids) == (12, CONTEXT)
    full_out, full_grads = features_and_grads(model, ids)
    torch.testing.assert_close(out, full_out, rtol=1e-5, atol=1e-6)
    assert grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_traced_text_encoder_keeps_every_position_and_row() -> None:
    model = tiny_model().eval()
    example = short_texts_with_repeats().flatten(0, 1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model.text_encoder, example)
    longer = token_ids(12, seed=8)  # distinct rows, ends up to the context
    assert int(longer.argmax(-1).max()) > int(example.argmax(-1).max())
    with torch.no_grad():
        torch.testing.assert_close(traced(longer), model.text_encoder(longer))


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_batches(rows: int) -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        assert model.text_encoder(token_ids(rows)).shape == (rows, model.text_encoder.width)
