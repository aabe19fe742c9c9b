"""The GroupViT method: samples from (image, caption), the training step, and bad samples in shards."""

from __future__ import annotations

import io
import random
import tarfile

import numpy as np
import pytest
import torch

from annofree.data.shards import ShardWriter
from annofree.methods import LoaderSpec, get_method
from annofree.methods.groupvit import NO_IDENTITY, SampleOptions, assignment_entropy, group_usage, make_sample

TINY_MODEL = {
    "image": {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depths": [1, 1, 1], "num_heads": [2, 2, 2],
              "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4], "drop_path_rate": 0.0},
    "text": {"context_length": 16, "width": 32, "layers": 1, "heads": 2},
    "embed_dim": 16,
    "proj_hidden_dim": 32,
}  # fmt: skip


def tiny_method(loss=None, **data):
    torch.manual_seed(0)
    config = {"method": "groupvit", "model": TINY_MODEL, "data": {"image_size": 32, "num_prompts": 2, **data}}
    return get_method("groupvit")({**config, "loss": loss or {}})


def options(**changes) -> SampleOptions:
    base = dict(image_size=24, crop_scale=(0.5, 1.0), crop_ratio=(0.75, 1.33), flip=True, num_prompts=3,
                templates="full", context_length=16)  # fmt: skip
    return SampleOptions(**{**base, **changes})


def test_sample_has_the_caption_and_k_prompts_and_fills_missing_nouns_with_the_caption():
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    sample = make_sample(options(), "k", image, "a red star next to a heart", random.Random(0))
    assert sample["image"].shape == (3, 24, 24) and sample["image"].dtype == torch.uint8
    assert sample["text"].shape == (16,) and sample["text"][0] == 49406
    assert sample["prompts"].shape == (3, 16)
    ids = sample["prompt_ids"].tolist()
    assert ids[2] == NO_IDENTITY and ids[0] != ids[1] and min(ids[:2]) >= 0  # two nouns, one stand-in
    assert torch.equal(sample["prompts"][2], sample["text"])  # the caption stands in for the missing noun


def test_stop_nouns_never_become_prompts_and_a_bad_list_is_a_user_error():
    from annofree.errors import UserError

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    opts = options(num_prompts=3, stop_nouns=frozenset({"photo", "red"}))
    sample = make_sample(opts, "k", image, "a photo of a red star and a heart", random.Random(0))
    plain = make_sample(options(num_prompts=2), "k", image, "a star and a heart", random.Random(0))
    ids = sample["prompt_ids"].tolist()
    assert set(ids[:2]) == set(plain["prompt_ids"].tolist())  # the prompts name the star and the heart only
    assert ids[2] == NO_IDENTITY  # and the caption stands in for the third
    assert tiny_method(stop_nouns=["Photo ", "year"]).sample_options.stop_nouns == {"photo", "year"}
    with pytest.raises(UserError, match=r"data\.stop_nouns"):
        tiny_method(stop_nouns="photo")


def test_samples_are_reproducible_from_their_rng():
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    a = make_sample(options(), "k", image, "a circle, a square and a ring", random.Random(4))
    b = make_sample(options(), "k", image, "a circle, a square and a ring", random.Random(4))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_prompt_ids_name_the_noun_not_the_template():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    ids = {make_sample(options(num_prompts=1), "k", image, "a star", random.Random(s))["prompt_ids"].item()
           for s in range(20)}  # fmt: skip
    assert len(ids) == 1


def batch_of(method, captions):
    images = np.random.default_rng(1).integers(0, 256, (len(captions), 32, 32, 3), dtype=np.uint8)
    opts = method.sample_options
    pairs = enumerate(zip(images, captions, strict=True))
    samples = [make_sample(opts, str(i), img, cap, random.Random(i)) for i, (img, cap) in pairs]
    batch = {name: torch.stack([s[name] for s in samples]) for name in samples[0]}
    return {**batch, "skipped": torch.tensor(0)}


def test_a_training_step_has_finite_losses_and_trains_both_encoders_and_both_scales():
    method = tiny_method()
    out = method(batch_of(method, ["a red circle", "two squares and a star", "a heart on grass", "a ring"]))
    assert set(out) >= {"loss_itc", "loss_multi_label", "logit_scale", "assign_entropy", "skipped"}
    assert 0.0 <= out["assign_entropy"].item() <= 1.0
    (out["loss_itc"] + out["loss_multi_label"]).backward()
    grads = {name: p.grad for name, p in method.named_parameters()}
    for name in ["model.logit_scale", "model.multi_label_logit_scale", "model.img_encoder.patch_embed.proj.weight",
                 "model.text_encoder.token_embedding.weight"]:  # fmt: skip
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


def test_the_sigmoid_form_scores_every_image_prompt_pair_with_a_bias_kept_out_of_the_model(monkeypatch):
    import annofree.methods.groupvit as groupvit_method
    from annofree.losses import multi_label_sigmoid_loss

    calls = []

    def spy(image, prompts, scale, bias, prompt_ids):
        calls.append({"prompts": prompts.shape, "bias": bias, "ids": prompt_ids})
        return multi_label_sigmoid_loss(image, prompts, scale, bias, prompt_ids=prompt_ids)

    monkeypatch.setattr(groupvit_method, "multi_label_sigmoid_loss", spy)
    method = tiny_method(loss={"multi_label_form": "sigmoid"})
    batch = batch_of(method, ["a red circle", "two squares and a star", "a star on grass", "a ring"])
    out = method(batch)
    assert len(calls) == 1 and calls[0]["prompts"][:2] == (4, 2) and calls[0]["bias"] is method.multi_label_bias
    assert torch.equal(calls[0]["ids"], batch["prompt_ids"])  # same nouns are positives across images
    out["loss_multi_label"].backward()
    assert method.multi_label_bias.grad is not None and method.multi_label_bias.grad.abs() > 0
    assert "multi_label_bias" in method.state_dict()  # resumed with the training state ...
    assert not any("multi_label_bias" in name for name in method.deployable().state_dict())  # ... not shipped


def test_the_patch_token_loss_is_the_multi_label_loss_on_max_pooled_stem_tokens(monkeypatch):
    method = tiny_method(loss={"patch_token_weight": 0.5})
    batch = batch_of(method, ["a red circle", "two squares and a star", "a star on grass", "a ring"])
    seen = []
    monkeypatch.setattr(method, "multi_label_loss", lambda image, prompts, batch: seen.append(image) or image.sum())
    out = method(batch)
    pixels = method.model.normalize_pixels(batch["image"].float() / 255)
    patches, _ = method.model.img_encoder.patch_embed(pixels)
    expected = method.model.img_projector(patches.amax(dim=1))
    assert len(seen) == 2 and torch.allclose(seen[1], expected, atol=1e-6)  # pooled segments first, then tokens
    assert torch.allclose(out["loss_patch_tokens"], 0.5 * expected.sum())
    out["loss_patch_tokens"].backward()
    assert method.model.img_encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert method.model.img_encoder.pos_embed.grad is None  # the tokens before the position embedding


def test_a_model_without_grouping_stages_trains_without_assignment_statistics():
    image = {**TINY_MODEL["image"], "depths": [1], "num_heads": [2], "num_group_tokens": [0], "num_output_groups": []}
    config = {"method": "groupvit", "model": {**TINY_MODEL, "image": image}, "data": {"image_size": 32}}
    method = get_method("groupvit")(config)
    out = method(batch_of(method, ["a red circle", "a star"]))
    assert "assign_entropy" not in out and torch.isfinite(out["loss_itc"] + out["loss_multi_label"])


def test_an_unknown_multi_label_form_is_a_user_error():
    from annofree.errors import UserError

    with pytest.raises(UserError, match=r"loss\.multi_label_form"):
        tiny_method(loss={"multi_label_form": "hinge"})


def test_without_the_multi_label_loss_there_is_no_prompt_work():
    method = tiny_method()
    method.multi_label_weight = 0.0
    out = method(batch_of(method, ["a red circle", "a star"]))
    assert "loss_multi_label" not in out and torch.isfinite(out["loss_itc"])


def test_no_weight_decay_names_position_embeddings_and_group_tokens():
    names = tiny_method().no_weight_decay()
    assert "model.img_encoder.pos_embed" in names
    assert any("group_token" in n for n in names) and "model.text_encoder.positional_embedding" in names


def test_unknown_template_set_is_a_user_error():
    from annofree.errors import UserError

    with pytest.raises(UserError, match=r"data\.templates"):
        tiny_method(templates="nope")


def test_assignment_entropy_is_one_when_uniform_and_zero_when_hard():
    uniform = torch.full((2, 4, 10), 0.25)
    hard = torch.nn.functional.one_hot(torch.arange(10) % 4, 4).T[None].float()
    assert assignment_entropy(uniform).item() == pytest.approx(1.0)
    assert assignment_entropy(hard).item() == pytest.approx(0.0, abs=1e-6)


def test_group_usage_is_one_when_tokens_spread_and_zero_when_one_group_takes_all():
    spread = torch.nn.functional.one_hot(torch.arange(12) % 4, 4).T[None].float()  # [1, G=4, N=12]
    collapsed = torch.zeros(1, 4, 12)
    collapsed[:, 2] = 1.0
    assert group_usage(spread).item() == pytest.approx(1.0)
    assert group_usage(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    # Confident assignments (assignment entropy 0) can still be collapsed: the two measure different things.
    assert assignment_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-6)


def test_corrupt_images_and_empty_captions_in_shards_are_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path, samples_per_shard=100) as writer:
        for i in range(10):
            writer.write(f"{i:04d}", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), f"a circle number {i}")
    # Append a corrupt image and an empty caption to the shard, as a broken crawl would.
    shard = writer.shard_paths[0]
    with tarfile.open(shard, "a") as tar:
        for name, data in [("bad1.jpg", b"not a jpeg"), ("bad1.txt", b"a square"), ("bad2.jpg", None),
                           ("bad2.txt", b"   ")]:  # fmt: skip
            if data is None:
                buffer = io.BytesIO()
                from PIL import Image

                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="JPEG")
                data = buffer.getvalue()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    method = tiny_method()
    first = list(method.train_batches(LoaderSpec(data=str(shard), batch_size=4)))
    assert sum(b["image"].shape[0] for b in first) == 8  # 10 good samples -> two full batches of 4
    # Drops after the epoch's last batch are carried to the next batch the method yields: none is lost.
    carried = method._carried_skips
    assert sum(int(b["skipped"]) for b in first) + carried == 2
    second = list(method.train_batches(LoaderSpec(data=str(shard), batch_size=4, epoch=1)))
    assert int(second[0]["skipped"]) >= carried
