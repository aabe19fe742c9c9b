"""Gradient checkpointing (``model.grad_checkpointing``): the same loss and gradients with less kept for backward,
inference untouched, and nothing of it in the model's config, weights or resume check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annofree.engine.config import check_resume
from annofree.errors import UserError
from annofree.methods import get_method
from annofree.methods.groupvit import collate, make_sample
from annofree.models.grouping import GroupingBlock
from annofree.models.layers import Block
from annofree.models.text_encoder import ResidualBlock
from tests.tiny import tiny_groupvit_section

# Gumbel noise (hard assignment, training), drop path and two text blocks: every random draw a recompute must replay.
MODEL = tiny_groupvit_section(image={"depths": [2, 1, 1], "drop_path_rate": 0.3}, text={"layers": 2})
CAPTIONS = ["a red circle", "two squares and a star", "a heart on grass", "a ring", "a blue star", "a big square"]
BLOCK_TYPES = (Block, GroupingBlock, ResidualBlock)


def method_with(checkpointing: bool | None, **model):
    config = {"method": "groupvit", "model": {**MODEL, **model}, "data": {"image_size": 32, "num_prompts": 2}}
    if checkpointing is not None:
        config["model"]["grad_checkpointing"] = checkpointing
    torch.manual_seed(0)
    return get_method("groupvit")(config)


def a_batch(method) -> dict:
    import random

    images = np.random.default_rng(1).integers(0, 256, (len(CAPTIONS), 32, 32, 3), dtype=np.uint8)
    samples = [make_sample(method.sample_options, str(i), image, caption, random.Random(i))
               for i, (image, caption) in enumerate(zip(images, CAPTIONS, strict=True))]  # fmt: skip
    return {**collate(samples), "skipped": torch.tensor(0)}


def count_block_calls(method) -> dict[str, int]:
    calls: dict[str, int] = {}
    for name, module in method.named_modules():
        if isinstance(module, BLOCK_TYPES):
            calls[name] = 0
            module.register_forward_pre_hook(lambda m, args, name=name: calls.__setitem__(name, calls[name] + 1))
    return calls


def train_step(method, seed: int = 1234) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """One training forward + backward from the random state ``seed`` -> (loss, gradients, bytes kept for
    backward)."""
    kept = 0

    def keep(tensor):
        nonlocal kept
        kept += tensor.numel() * tensor.element_size()
        return tensor

    method.train()
    method.zero_grad(set_to_none=True)
    batch = a_batch(method)
    torch.manual_seed(seed)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        out = method(batch)
        loss = out["loss_itc"] + out["loss_multi_label"]
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}, kept


def test_checkpointed_blocks_give_the_same_loss_and_gradients_and_keep_less_for_backward():
    plain, checkpointed = method_with(False), method_with(True)
    calls = count_block_calls(checkpointed)
    assert len(calls) == 4 + 2 + 2  # four image transformer blocks, two grouping blocks, two text blocks
    loss, grads, kept = train_step(plain)
    loss_ckpt, grads_ckpt, kept_ckpt = train_step(checkpointed)
    assert set(calls.values()) == {2}  # every block ran again in backward
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-6, atol=0)
    assert grads_ckpt.keys() == grads.keys() == {name for name, _ in plain.named_parameters()}
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-6, atol=1e-9, msg=name)
    assert kept_ckpt < 0.5 * kept


def test_the_gradients_depend_on_the_random_draws_that_the_recompute_replays():
    # Without the same draws the comparison above could not fail: another seed changes the gradients.
    method = method_with(True)
    _, first, _ = train_step(method, seed=1234)
    _, second, _ = train_step(method, seed=99)
    for name in ("model.img_encoder.layers.0.blocks.0.attn.qkv.weight", "model.text_encoder.token_embedding.weight"):
        assert not torch.allclose(second[name], first[name]), name


def test_inference_and_no_grad_run_every_block_once():
    method = method_with(True)
    calls = count_block_calls(method)
    batch = a_batch(method)
    pixels = method.model.normalize_pixels(batch["image"].float() / 255)
    method.eval()
    method.model.encode_groups(pixels)
    method.model.encode_text(batch["text"])
    method.train()
    with torch.no_grad():
        method(batch)
    assert set(calls.values()) == {2}  # once in eval mode, once under no_grad


def test_the_switch_is_no_part_of_the_model_config_weights_or_resume_check():
    plain, checkpointed = method_with(None), method_with(True)
    assert checkpointed.model_config() == plain.model_config()
    assert "grad_checkpointing" not in str(checkpointed.model_config())
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    model_of = get_method("groupvit").model_section
    saved = {"method": "groupvit", "model": {**MODEL, "grad_checkpointing": False}}
    check_resume(saved, {**saved, "model": {**MODEL, "grad_checkpointing": True}}, model_of)  # no refusal
    check_resume(saved, {**saved, "model": MODEL}, model_of)
    checkpointed.model.set_grad_checkpointing(False)
    assert not any(getattr(m, "grad_checkpointing", False) for m in checkpointed.modules())


def test_a_bad_value_is_a_one_line_error_naming_the_key():
    with pytest.raises(UserError, match=r"config key model\.grad_checkpointing: must be") as info:
        method_with("yes")
    assert "\n" not in str(info.value)


def test_an_exact_accumulation_step_gives_the_same_gradients_checkpointed():
    """Exact accumulation runs each micro-batch twice under its own seeded noise; checkpointing recomputes
    inside the second pass: the step's loss and gradients stay those of the step without it."""
    from annofree.engine import distributed
    from annofree.engine.trainer import _Run
    from tests.engine import exact_worker as problem

    def step(checkpointing: bool):
        cfg = problem.config({}, 2)
        cfg["model"] = {**problem.MODEL, "grad_checkpointing": checkpointing}
        run = _Run(cfg, get_method("groupvit"), distributed.setup("cpu"))
        assert any(getattr(m, "grad_checkpointing", False) for m in run.method.modules()) == checkpointing
        _, loss = run.exact_step([problem.micro_batch(run, i) for i in range(2)], problem.STEP)
        return loss.detach(), {name: p.grad for name, p in run.method.named_parameters() if p.grad is not None}

    (loss, grads), (loss_ckpt, grads_ckpt) = step(False), step(True)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-6, atol=0)
    assert grads_ckpt.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-6, atol=1e-9, msg=name)
