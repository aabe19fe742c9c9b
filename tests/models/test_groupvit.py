"""Unit tests of annofree's GroupViT: shapes, position embedding, assignment, grouping maps, train/eval behaviour."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annofree.errors import UserError
from annofree.models import GroupViT, GroupViTConfig, ImageEncoderConfig, TextEncoderConfig
from annofree.models.grouping import AssignAttention, GroupingBlock, gumbel_softmax, hard_one_hot
from annofree.models.layers import DropPath

SIDE, PATCH, WIDTH, EMBED = 32, 8, 32, 16
GROUPS = (8, 4)  # group tokens of stages 1 and 2; the final image has 4 segment tokens
CONTEXT, VOCAB = 16, 100


def tiny_config(**image) -> GroupViTConfig:
    defaults = dict(
        img_size=SIDE,
        patch_size=PATCH,
        embed_dim=WIDTH,
        depths=(1, 1, 1),
        num_heads=(2, 2, 2),
        num_group_tokens=(*GROUPS, 0),
        num_output_groups=GROUPS,
        drop_path_rate=0.0,
    )
    return GroupViTConfig(
        image=ImageEncoderConfig(**{**defaults, **image}),
        text=TextEncoderConfig(context_length=CONTEXT, vocab_size=VOCAB, width=32, layers=1, heads=2),
        embed_dim=EMBED,
        proj_hidden_dim=32,
    )


def tiny_model(seed: int = 0, **image) -> GroupViT:
    torch.manual_seed(seed)
    return GroupViT(tiny_config(**image))


def pixels(batch: int, height: int = SIDE, width: int = SIDE, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def token_ids(*shape: int, length: int = CONTEXT, seed: int = 2) -> torch.Tensor:
    """Random words, the end-of-text id (the largest) somewhere, zero padding after it."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB - 1, (*shape, length), generator=gen)
    ends = torch.randint(1, length, shape, generator=gen)
    positions = torch.arange(length)
    ids[positions == ends[..., None]] = VOCAB - 1
    ids[positions > ends[..., None]] = 0
    return ids


# ----------------------------------------------------------------------------- shapes and norms


def test_output_shapes() -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        out = model.encode_groups(pixels(3))
        assert model.encode_image(pixels(3)).shape == (3, EMBED)
        assert model.encode_text(token_ids(3)).shape == (3, EMBED)
        assert model.encode_text(token_ids(3, length=5)).shape == (3, EMBED)
        assert model.text_features(token_ids(3, 2)).shape == (3, 2, EMBED)
    n = (SIDE // PATCH) ** 2
    assert out.grid == (SIDE // PATCH, SIDE // PATCH)
    assert out.image_embeds.shape == (3, EMBED)
    assert out.group_embeds.shape == (3, GROUPS[-1], EMBED)
    assert out.grouping.shape == (3, n, GROUPS[-1])
    assert [tuple(s.shape) for s in out.soft_assignments] == [(3, GROUPS[0], n), (3, GROUPS[1], GROUPS[0])]


def test_text_longer_than_context_is_refused_saying_how_to_tokenize() -> None:
    message = rf"length {CONTEXT + 1}, above this model's context length {CONTEXT}: tokenize with model.tokenize"
    with pytest.raises(UserError, match=message) as caught:
        tiny_model().encode_text(token_ids(2, length=CONTEXT + 1))
    assert f"annofree.tokenize(texts, context_length={CONTEXT})" in str(caught.value)


def test_the_model_tokenizes_at_its_own_context_length() -> None:
    import annofree

    config = tiny_config()
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, vocab_size=49408))  # CLIP's BPE ids
    model = GroupViT(config).eval()
    texts = ["a photo of a star.", "a cat " * 40]  # the second is longer than the context: truncated
    ids = model.tokenize(texts)
    assert ids.shape == (2, CONTEXT) and ids.dtype == torch.long
    torch.testing.assert_close(ids, annofree.tokenize(texts, context_length=CONTEXT))
    assert annofree.tokenize(texts).shape == (2, 77)  # the library's default: CLIP's, too long for this model
    with torch.no_grad():
        assert model.encode_text(model.tokenize(texts)).shape == (2, EMBED)


def test_text_pooling_ignores_padding_after_end_of_text() -> None:
    model = tiny_model().eval()
    ids = token_ids(2)
    other_padding = torch.where(ids == 0, torch.randint_like(ids, 1, VOCAB - 1), ids)
    after_end = torch.arange(CONTEXT) > (ids == VOCAB - 1).int().argmax(-1, keepdim=True)
    other_padding[~after_end] = ids[~after_end]
    assert not torch.equal(other_padding, ids)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(other_padding), model.encode_text(ids))


def test_embeddings_have_unit_norm() -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        out = model.encode_groups(pixels(2))
        norms = [
            model.encode_image(pixels(2)).norm(dim=-1),
            model.encode_text(token_ids(2)).norm(dim=-1),
            out.image_embeds.norm(dim=-1),
            out.group_embeds.norm(dim=-1),
        ]
    for norm in norms:
        torch.testing.assert_close(norm, torch.ones_like(norm))


def test_scale_is_exp_of_logit_scale_clamped_at_100() -> None:
    model = tiny_model()
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0)


# ----------------------------------------------------------------------------- position embedding


def test_position_embedding_is_the_parameter_at_the_native_grid() -> None:
    encoder = tiny_model().img_encoder
    side = SIDE // PATCH
    assert encoder.position_embedding((side, side)) is encoder.pos_embed


@pytest.mark.parametrize("grid", [(3, 6), (7, 5), (8, 8), (2, 2)])
def test_position_embedding_interpolates_per_axis(grid: tuple[int, int]) -> None:
    """Bicubic resizing of an embedding that varies along columns only keeps every row the same."""
    encoder = tiny_model().img_encoder
    side = SIDE // PATCH
    columns = torch.randn(1, 1, side, WIDTH).expand(1, side, side, WIDTH)
    with torch.no_grad():
        encoder.pos_embed.copy_(columns.reshape(1, side * side, WIDTH))
        resized = encoder.position_embedding(grid).reshape(1, *grid, WIDTH)
    assert resized.shape == (1, *grid, WIDTH)
    torch.testing.assert_close(resized, resized[:, :1].expand_as(resized))
    assert not torch.allclose(resized[:, :, 0], resized[:, :, -1])
    # A constant embedding stays constant at any grid (bicubic weights sum to one).
    with torch.no_grad():
        encoder.pos_embed.fill_(0.25)
        torch.testing.assert_close(encoder.position_embedding(grid), torch.full((1, grid[0] * grid[1], WIDTH), 0.25))


@pytest.mark.parametrize(("height", "width"), [(24, 48), (56, 40), (64, 64)])
def test_model_runs_at_other_and_non_square_sizes(height: int, width: int) -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        out = model.encode_groups(pixels(2, height, width))
    grid = (height // PATCH, width // PATCH)
    assert out.grid == grid
    assert out.grouping.shape == (2, grid[0] * grid[1], GROUPS[-1])
    assert out.soft_assignments[0].shape == (2, GROUPS[0], grid[0] * grid[1])
    assert torch.isfinite(out.group_embeds).all()


def test_conv_stem_gives_the_patch_grid_and_trains() -> None:
    model = tiny_model(stem="conv").train()
    out = model.encode_groups(pixels(2, 48, 40))
    assert out.grid == (48 // PATCH, 40 // PATCH)
    out.group_embeds.sum().backward()
    first_conv = model.img_encoder.patch_embed.proj[0]
    assert first_conv.stride == (2, 2) and first_conv.weight.grad.abs().sum() > 0
    strides = [m.stride[0] for m in model.img_encoder.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 2, 1]  # three halvings for patch 8, then the 1x1 projection


@pytest.mark.parametrize("patch", [3, 6])
def test_conv_stem_needs_a_power_of_two_patch(patch: int) -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        GroupViT(tiny_config(stem="conv", patch_size=patch, img_size=patch * 4))


def test_cnn_stem_adds_a_vgg_style_cnn_to_the_patch_projection() -> None:
    model = tiny_model(stem="cnn").train()
    out = model.encode_groups(pixels(2, 48, 40))
    assert out.grid == (48 // PATCH, 40 // PATCH)
    out.group_embeds.sum().backward()
    convs = [m for m in model.img_encoder.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert [m.stride[0] for m in convs] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1]  # full size, 3 halvings, 2 more, 1x1
    assert [m.out_channels for m in convs] == [16, 32, 32, 64, 64, 128, 128, 128, 128, WIDTH]  # at least 16 first
    assert all(m.weight.grad.abs().sum() > 0 for m in convs)
    patch = model.img_encoder.patch_embed.patch  # the paper's linear patch projection, added to the CNN's output
    assert patch.stride == (PATCH, PATCH) and patch.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="power-of-two"):
        GroupViT(tiny_config(stem="cnn", patch_size=6, img_size=24))


def test_without_the_group_residual_a_segment_holds_only_its_own_tokens() -> None:
    """Paper form: segment = group query + pooled tokens. Off: a token assigned elsewhere cannot reach it."""
    changed = {}
    for residual in (True, False):
        block = GroupingBlock(WIDTH, 2, 4, 3, hard=True, gumbel=False, residual=residual).eval()
        tokens, groups = torch.randn(1, 12, WIDTH), torch.randn(1, 4, WIDTH)
        with torch.no_grad():
            before, soft = block(tokens, groups)
            owner = soft.argmax(dim=1)[0]  # each token's group
            other = int((owner != owner[0]).nonzero()[0])  # a token that another group owns
            moved = tokens.clone()
            moved[0, other] += 1e-3 * torch.randn(WIDTH)
            after, soft_after = block(moved, groups)
        assert torch.equal(soft_after.argmax(dim=1), soft.argmax(dim=1))
        changed[residual] = (after[0, owner[0]] - before[0, owner[0]]).abs().max().item()
    assert changed[True] > 1e-6  # the query saw the moved token through the pre-assign attention
    assert changed[False] < 1e-6


def test_unknown_stem_is_refused() -> None:
    with pytest.raises(ValueError, match="stem"):
        tiny_config(stem="hybrid")


# ----------------------------------------------------------------------------- assignment


def readable_assign(
    tokens: int = 24, groups: int = 4, seed: int = 0
) -> tuple[AssignAttention, torch.Tensor, torch.Tensor]:
    """An AssignAttention whose output IS its (normalised) assignment: identity value/output projections and
    one-hot image tokens, so ``out[b, s, n]`` is the weight of token n in group s."""
    torch.manual_seed(seed)
    attn = AssignAttention(tokens, hard=True, gumbel=True, eps=1.0)
    with torch.no_grad():
        for linear in (attn.v_proj, attn.proj):
            linear.weight.copy_(torch.eye(tokens))
            linear.bias.zero_()
    image_tokens = torch.eye(tokens)[None].repeat(2, 1, 1)
    group_tokens = torch.randn(2, groups, tokens)
    return attn, group_tokens, image_tokens


def chosen_groups(out: torch.Tensor) -> torch.Tensor:
    """Check the read-out assignment is hard (one group per token, weight 1/(count + eps)); -> group per token."""
    chosen = out != 0
    assert (chosen.sum(dim=1) == 1).all(), "every token goes to exactly one group"
    counts = chosen.sum(dim=2, keepdim=True).float()
    torch.testing.assert_close(out, chosen / (counts + 1.0))
    return chosen.float().argmax(dim=1)


def test_eval_assignment_is_one_hot_at_the_soft_argmax() -> None:
    attn, groups, tokens = readable_assign()
    attn.eval()
    with torch.no_grad():
        out, soft = attn(groups, tokens)
        again, _ = attn(groups, tokens)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(2, tokens.shape[1]))
    assert torch.equal(chosen_groups(out), soft.argmax(dim=1))
    assert torch.equal(out, again)


def test_train_assignment_is_a_gumbel_sample() -> None:
    attn, groups, tokens = readable_assign(tokens=64)
    attn.train()
    with torch.no_grad():
        torch.manual_seed(10)
        first, soft = attn(groups, tokens)
        second, _ = attn(groups, tokens)
        torch.manual_seed(10)
        replay, _ = attn(groups, tokens)
    picks = chosen_groups(first)
    assert not torch.equal(picks, chosen_groups(second)), "two samples should differ"
    assert not torch.equal(picks, soft.argmax(dim=1)), "a sample is not the argmax"
    assert torch.equal(first, replay), "same seed, same sample"


def test_train_assignment_samples_every_group_when_logits_tie() -> None:
    attn, groups, tokens = readable_assign(tokens=64, groups=4)
    with torch.no_grad():
        attn.q_proj.weight.zero_()
        attn.q_proj.bias.zero_()
    attn.train()
    with torch.no_grad():
        picks = torch.cat([chosen_groups(attn(groups, tokens)[0]).flatten() for _ in range(5)])
    counts = torch.bincount(picks, minlength=4).float()
    # 640 uniform draws over 4 groups: each count is 160 +- 11 (one std); 100 is more than 5 std away.
    assert (counts > 100).all(), counts


def test_hard_one_hot_has_the_straight_through_gradient() -> None:
    logits = torch.randn(3, 5, 7, requires_grad=True)
    weights = torch.randn(3, 5, 7)
    probs = logits.softmax(dim=1)
    hard = hard_one_hot(probs, dim=1)
    torch.testing.assert_close(hard, F.one_hot(probs.argmax(1), 5).permute(0, 2, 1).float())
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    (grad_soft,) = torch.autograd.grad((logits.softmax(dim=1) * weights).sum(), logits)
    torch.testing.assert_close(grad_hard, grad_soft)
    assert grad_hard.abs().sum() > 0


def test_gumbel_softmax_is_one_hot_with_the_soft_samples_gradient() -> None:
    logits = torch.randn(2, 6, 9, requires_grad=True)
    weights = torch.randn(2, 6, 9)
    torch.manual_seed(3)
    hard = gumbel_softmax(logits, dim=1, tau=0.5, hard=True)
    torch.manual_seed(3)
    soft = gumbel_softmax(logits, dim=1, tau=0.5, hard=False)
    torch.testing.assert_close(hard, F.one_hot(soft.argmax(1), 6).permute(0, 2, 1).float())
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(2, 9))
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits, retain_graph=True)
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    torch.testing.assert_close(grad_hard, grad_soft)


@pytest.mark.parametrize("training", [True, False])
def test_gradients_reach_the_group_tokens_through_hard_assignment(training: bool) -> None:
    model = tiny_model().train(training)
    model.image_features(pixels(4)).pow(2).sum().backward()
    for layer in model.img_encoder.layers[:2]:
        assert layer.downsample.assign.q_proj.weight.grad.abs().sum() > 0
    assert model.img_encoder.layers[0].group_token.grad.abs().sum() > 0


def test_model_assignment_is_random_in_training_only() -> None:
    model = tiny_model()
    images = pixels(2)
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        first = model.image_features(images)
        second = model.image_features(images)
        torch.manual_seed(0)
        replay = model.image_features(images)
        model.eval()
        evaluated = [model.image_features(images) for _ in range(2)]
    assert not torch.allclose(first, second)
    assert torch.equal(first, replay)
    assert torch.equal(*evaluated)


def test_without_gumbel_training_assignment_is_the_deterministic_argmax() -> None:
    model = tiny_model(gumbel=False).train()
    assigns = [layer.downsample.assign for layer in model.img_encoder.layers[:2]]
    assert all(assign.hard and not assign.gumbel for assign in assigns)
    images = pixels(2)
    first, second = model.image_features(images), model.image_features(images)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    first.pow(2).sum().backward()  # the straight-through gradient still reaches the assignment
    assert model.img_encoder.layers[0].downsample.assign.q_proj.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- grouping maps


@pytest.mark.parametrize("training", [False, True])
def test_grouping_maps_sum_to_one_over_groups(training: bool) -> None:
    model = tiny_model().train(training)
    with torch.no_grad():
        out = model.encode_groups(pixels(2, 40, 24))
    torch.testing.assert_close(out.grouping.sum(dim=-1), torch.ones(out.grouping.shape[:2]))
    for soft in out.soft_assignments:
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(soft.shape[0], soft.shape[2]))
    assert (out.grouping >= 0).all()
    # The chained map is the product of the stage maps.
    manual = out.soft_assignments[0].transpose(1, 2) @ out.soft_assignments[1].transpose(1, 2)
    torch.testing.assert_close(out.grouping, manual)


# ----------------------------------------------------------------------------- drop path, BatchNorm, modes


def test_drop_path_module() -> None:
    drop = DropPath(0.5)
    x = torch.ones(400, 3, 2)
    torch.manual_seed(0)
    y = drop.train()(x)
    kept = y[:, 0, 0] != 0
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0)), "kept samples are rescaled by 1/keep"
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept])), "whole samples are dropped"
    assert 0.35 < kept.float().mean() < 0.65
    assert torch.equal(drop.eval()(x), x)


def test_drop_path_is_off_in_eval_and_on_in_training() -> None:
    # Soft assignment (no Gumbel noise) so that drop path is the only randomness.
    model = tiny_model(drop_path_rate=0.6, hard_assignment=False)
    reference = GroupViT(tiny_config(drop_path_rate=0.0, hard_assignment=False))
    reference.load_state_dict(model.state_dict())
    images = pixels(4)
    with torch.no_grad():
        model.eval()
        reference.eval()
        torch.testing.assert_close(model.image_features(images), reference.image_features(images), rtol=0, atol=0)
        model.train()
        reference.train()
        torch.manual_seed(1)
        dropped = model.image_features(images)
        torch.testing.assert_close(reference.image_features(images), reference.image_features(images))
    assert not torch.allclose(dropped, reference.image_features(images))
    rates = [block.drop_path.p for layer in model.img_encoder.layers for block in layer.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.6, 3).tolist())


def batch_norms(model: nn.Module) -> list[nn.BatchNorm1d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]


def test_eval_uses_running_statistics() -> None:
    model = tiny_model()
    images = pixels(4)
    with torch.no_grad():
        model.train()
        model.encode_image(images)  # moves the running statistics away from (0, 1)
        model.encode_text(token_ids(4))
        model.eval()
        before = copy.deepcopy([(bn.running_mean, bn.running_var) for bn in batch_norms(model)])
        batch = model.encode_image(images)
        alone = torch.cat([model.encode_image(images[i : i + 1]) for i in range(4)])
        texts = model.encode_text(token_ids(4))
        texts_alone = torch.cat([model.encode_text(token_ids(4)[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(texts, texts_alone, atol=1e-5, rtol=1e-5)
    for bn, (mean, var) in zip(batch_norms(model), before, strict=True):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert not torch.allclose(before[0][0], torch.zeros_like(before[0][0]))


def test_training_uses_batch_statistics_and_updates_running_ones() -> None:
    model = tiny_model(hard_assignment=False).train()
    images = pixels(4)
    running = [bn.running_mean.clone() for bn in batch_norms(model)]
    with torch.no_grad():
        with_batch = model.image_features(images)[0]
        with_other_batch = model.image_features(torch.cat([images[:1], pixels(3, seed=9)]))[0]
        model.text_features(token_ids(4))
    assert not torch.allclose(with_batch, with_other_batch), "a sample's output depends on its batch in training"
    for bn, mean in zip(batch_norms(model), running, strict=True):
        assert not torch.equal(bn.running_mean, mean)


def test_text_features_of_nested_batches_share_one_batch_norm_pass() -> None:
    model = tiny_model().train()
    ids = token_ids(3, 2)
    with torch.no_grad():
        nested = model.text_features(ids)
        flat = model.text_features(ids.reshape(6, CONTEXT)).reshape(3, 2, EMBED)
    torch.testing.assert_close(nested, flat)
