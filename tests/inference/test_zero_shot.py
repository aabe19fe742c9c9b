import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annofree.data.images import to_pixel_batch
from annofree.errors import UserError
from annofree.inference.zero_shot import (
    ZeroShotSegmenter,
    check_class_names,
    class_embeddings,
    group_class_affinity,
    group_class_similarity,
    inference_precision,
    pixel_logits,
    similarity_logits,
)
from annofree.models import GroupOutput, GroupViT

# ----------------------------------------------------------------------------- the rule, by hand


def _softmax(values):
    top = max(values)
    exps = [math.exp(v - top) if v != -math.inf else 0.0 for v in values]
    return [e / sum(exps) for e in exps]


def test_group_class_affinity_matches_a_hand_computation():
    torch.manual_seed(0)
    groups = F.normalize(torch.randn(2, 3, 5), dim=-1)
    image = F.normalize(torch.randn(2, 5), dim=-1)
    text = F.normalize(torch.randn(4, 5), dim=-1)
    scale, k = 7.0, 2
    got = group_class_affinity(groups, image, text, scale, topk=k)
    assert got.shape == (2, 3, 4)
    for b in range(2):
        image_scores = [scale * float(image[b] @ text[c]) for c in range(4)]
        kept = sorted(range(4), key=lambda c: image_scores[c], reverse=True)[:k]
        for g in range(3):
            logits = [scale * float(groups[b, g] @ text[c]) for c in range(4)]
            plain = _softmax(logits)
            masked = _softmax([v if c in kept else -math.inf for c, v in enumerate(logits)])
            for c in range(4):
                assert got[b, g, c].item() == pytest.approx(plain[c] * masked[c], rel=1e-5, abs=1e-7)
                if c not in kept:
                    assert got[b, g, c].item() == 0.0  # the image-level filter removes it entirely


def test_topk_none_keeps_every_class_and_squares_the_affinity():
    torch.manual_seed(1)
    groups = F.normalize(torch.randn(1, 2, 4), dim=-1)
    text = F.normalize(torch.randn(3, 4), dim=-1)
    got = group_class_affinity(groups, F.normalize(torch.randn(1, 4), dim=-1), text, 5.0, topk=None)
    plain = (groups @ text.T * 5.0).softmax(-1)
    torch.testing.assert_close(got, plain * plain)


def test_background_channel_uses_the_smaller_of_threshold_and_best_affinity():
    affinity = torch.tensor([[[0.8, 0.1], [0.3, 0.5], [0.05, 0.02]]])  # [B=1, G=3, C=2]
    group_index = torch.tensor([[[0, 1], [2, 0]]])  # [1, 2, 2]
    low = pixel_logits(group_index, affinity, bg_thresh=0.4)
    # Threshold 0.4 (< best affinity 0.8): groups 0 and 1 clear it, group 2 (best 0.05) does not.
    assert low.shape == (1, 3, 2, 2)
    assert low[0, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]
    torch.testing.assert_close(low[0, 1:, 0, 1], affinity[0, 1])
    torch.testing.assert_close(low[0, 1:, 1, 1], affinity[0, 0])
    assert low[0].argmax(0).tolist() == [[1, 2], [0, 1]]
    high = pixel_logits(group_index, affinity, bg_thresh=0.95)
    # Threshold min(0.95, 0.8) = 0.8: only the best group stays foreground.
    assert high[0, 0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert high[0].argmax(0).tolist() == [[1, 0], [0, 1]]
    without = pixel_logits(group_index, affinity, bg_thresh=None)
    torch.testing.assert_close(without, low[:, 1:])


def test_group_class_similarity_is_the_cosine_with_the_image_top_k_only():
    torch.manual_seed(2)
    groups = F.normalize(torch.randn(2, 3, 5), dim=-1)
    image = F.normalize(torch.randn(2, 5), dim=-1)
    text = F.normalize(torch.randn(4, 5), dim=-1)
    got = group_class_similarity(groups, image, text, topk=2)
    for b in range(2):
        kept = set((image[b] @ text.T).topk(2).indices.tolist())
        for c in range(4):
            expected = groups[b, :, c : c + 1].new_full((3,), -1.0) if c not in kept else groups[b] @ text[c]
            torch.testing.assert_close(got[b, :, c], expected)
    torch.testing.assert_close(group_class_similarity(groups, image, text, topk=None), groups @ text.T)


def test_similarity_background_is_a_constant_channel_at_the_threshold():
    similarity = torch.tensor([[[0.5, 0.1], [0.15, 0.3], [0.05, -1.0]]])  # [B=1, G=3, C=2]
    group_index = torch.tensor([[[0, 1], [2, 0]]])
    logits = similarity_logits(group_index, similarity, bg_thresh=0.2)
    assert logits.shape == (1, 3, 2, 2)
    torch.testing.assert_close(logits[0, 0], torch.full((2, 2), 0.2))
    torch.testing.assert_close(logits[0, 1:, 0, 1], similarity[0, 1])
    # Group 0 (best 0.5) and group 1 (best 0.3) clear 0.2; group 2 (best 0.05) is background.
    assert logits[0].argmax(0).tolist() == [[1, 2], [0, 1]]
    assert similarity_logits(group_index, similarity, bg_thresh=0.4)[0].argmax(0).tolist() == [[1, 0], [0, 1]]
    torch.testing.assert_close(similarity_logits(group_index, similarity, None), logits[:, 1:])


def test_the_similarity_rule_leaves_a_group_like_no_class_in_the_background():
    # The lone-object scene: group 0 is a cat, group 1 matches nothing (cosine 0 with every class). The image
    # filter keeps only "cat", so the empty group's affinity to cat is 1 (the filtered softmax) times 1/3 (the
    # plain one): a softmax over class names says which name fits best, not whether any fits.
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0])
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    affinity = _segmenter(model, topk=1, bg_thresh=0.3).segment(image).label_map
    similarity = _segmenter(model, topk=1, bg_rule="similarity", bg_thresh=0.2).segment(image)
    assert (affinity == 1).all()  # 1/3 clears 0.3: the empty half is called a cat
    expected = np.zeros((8, 16), dtype=np.int64)
    expected[:, :8] = 1  # cosine 1 against 0 at threshold 0.2: the empty half is background
    np.testing.assert_array_equal(similarity.label_map, expected)
    torch.testing.assert_close(similarity.logits[0], torch.full((8, 16), 0.2))
    torch.testing.assert_close(similarity.logits[2:], torch.full((2, 8, 16), -1.0))  # filtered out


def test_class_name_checks():
    assert check_class_names([" cat", "dog "]) == ["cat", "dog"]
    with pytest.raises(UserError, match="no class names"):
        check_class_names([])
    with pytest.raises(UserError, match="duplicated class name 'Cat'"):
        check_class_names(["cat", "dog", "Cat"])
    with pytest.raises(UserError, match="empty class name"):
        check_class_names(["cat", " "])


def test_input_layouts_agree():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    reference = to_pixel_batch(image)
    assert reference.shape == (1, 3, 5, 7)
    torch.testing.assert_close(to_pixel_batch(torch.from_numpy(image)), reference)
    torch.testing.assert_close(to_pixel_batch(torch.from_numpy(image).permute(2, 0, 1).float() / 255), reference)
    torch.testing.assert_close(to_pixel_batch([image, image]), reference.expand(2, -1, -1, -1))
    grey = image[..., 0]
    torch.testing.assert_close(to_pixel_batch(grey), to_pixel_batch(np.repeat(grey[..., None], 3, axis=2)))
    with pytest.raises(UserError, match="one size"):
        to_pixel_batch([image, image[:4]])
    with pytest.raises(UserError, match=r"\[H, W, C\]"):
        to_pixel_batch(np.zeros((5, 7, 9), dtype=np.uint8))


# ----------------------------------------------------------------------------- a model with a known grouping


class KnownGroupsModel(nn.Module):
    """A GroupViT stand-in with two groups: the left and the right half of the patch grid.

    Class ``i`` of ``names`` has the text embedding ``e_i``; group and image embeddings are given by
    the test, so every affinity can be worked out by hand.
    """

    def __init__(self, names, group_embeds, image_embed, scale=10.0):
        super().__init__()
        self.names = [n.lower() for n in names]
        self.dim = group_embeds.shape[-1]
        self.group_embeds = F.normalize(torch.as_tensor(group_embeds, dtype=torch.float32), dim=-1)
        self.image_embed = F.normalize(torch.as_tensor(image_embed, dtype=torch.float32), dim=-1)
        self._scale = scale
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the segmenter a device and dtype
        self.config = SimpleNamespace(image=SimpleNamespace(patch_size=4), text=SimpleNamespace(context_length=8))
        self.calls: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def normalize_pixels(self, pixels):
        return pixels

    def scale(self):
        return torch.tensor(self._scale)

    def tokenize(self, texts, context_length=77):
        index = [next(i for i, n in enumerate(self.names) if f" {n}." in t.lower()) for t in texts]
        return torch.tensor(index)[:, None].expand(-1, context_length).clone()

    def encode_text(self, token_ids):
        return F.one_hot(token_ids[:, 0], self.dim).float()

    def encode_groups(self, pixels):
        self.calls.append(tuple(pixels.shape))
        self.modes.append(self.training)
        batch, _, height, width = pixels.shape
        h, w = height // 4, width // 4
        right = (torch.arange(w) >= w / 2).float()
        soft_right = (0.1 + 0.8 * right).expand(h, w).reshape(-1)  # 0.9 on the own half, 0.1 on the other
        grouping = torch.stack([1 - soft_right, soft_right], dim=-1).expand(batch, -1, -1)
        return GroupOutput(
            image_embeds=self.image_embed.expand(batch, -1),
            group_embeds=self.group_embeds.expand(batch, -1, -1),
            grouping=grouping,
            soft_assignments=[],
            grid=(h, w),
        )


NAMES = ["cat", "dog", "sky"]
E = torch.eye(4)  # e_0..e_2 are the classes, e_3 is unrelated to all of them


def _segmenter(model, **kwargs):
    options = dict(template="a photo of a {}.", short_side=None, tokenizer=model.tokenize)
    options.update(kwargs)
    return ZeroShotSegmenter(model, NAMES, **options)


def test_label_map_of_a_known_grouping():
    # Group 0 (left half) is a cat; group 1 (right half) matches no class: uniform affinity.
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0] + 0.5 * E[1])
    result = _segmenter(model).segment(np.zeros((8, 16, 3), dtype=np.uint8))
    cat = math.exp(10) / (math.exp(10) + 2)  # softmax of scale * (1, 0, 0); the filter keeps all 3 classes
    assert result.class_names == ["background", "cat", "dog", "sky"]
    torch.testing.assert_close(result.logits[1, :, :8], torch.full((8, 8), cat * cat))
    torch.testing.assert_close(result.logits[2:, :, 8:], torch.full((2, 8, 8), 1 / 9))
    # Threshold min(0.95, cat^2) = 0.95: the cat group clears it, the uniform group (1/9) does not.
    expected = np.zeros((8, 16), dtype=np.int64)
    expected[:, :8] = 1
    np.testing.assert_array_equal(result.label_map, expected)
    assert result.fractions() == {"background": 0.5, "cat": 0.5, "dog": 0.0, "sky": 0.0}


def test_image_level_top_k_filter_changes_the_labels():
    # The image looks like a dog: with top-1 only "dog" survives the filter. The cat group's cat score
    # drops to 0 and its dog score to softmax(0 | 10, 0, 0); the uniform group gets 1/3 for dog, which
    # is also the best affinity and so the threshold.
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[1])
    result = _segmenter(model, topk=1).segment(np.zeros((8, 16, 3), dtype=np.uint8))
    assert result.logits[1].abs().max().item() == 0.0
    dog_in_cat_group = 1 / (math.exp(10) + 2)
    torch.testing.assert_close(result.logits[2, :, :8], torch.full((8, 8), dog_in_cat_group))
    torch.testing.assert_close(result.logits[2, :, 8:], torch.full((8, 8), 1 / 3))
    expected = np.zeros((8, 16), dtype=np.int64)
    expected[:, 8:] = 2
    np.testing.assert_array_equal(result.label_map, expected)


def test_without_background_the_labels_are_the_class_indices():
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[2]]), E[0] + E[2])
    result = _segmenter(model, with_background=False).segment(np.zeros((8, 16, 3), dtype=np.uint8))
    assert result.class_names == NAMES
    assert result.logits.shape == (3, 8, 16)
    expected = np.zeros((8, 16), dtype=np.int64)
    expected[:, 8:] = 2  # left: cat (0), right: sky (2)
    np.testing.assert_array_equal(result.label_map, expected)


def test_odd_sizes_are_resized_to_whole_patches_and_mapped_back():
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0])
    result = _segmenter(model).segment(np.zeros((37, 53, 3), dtype=np.uint8))
    assert model.calls == [(1, 3, 36, 52)]  # 9 x 13 patches of 4 px
    assert result.label_map.shape == (37, 53)
    # Patch columns 0-6 of 13 are the cat group: the maps cross half-way between the centres of columns
    # 6 and 7, i.e. where the input column x maps to patch coordinate (x + 0.5) * 13 / 53 - 0.5 = 6.5.
    left = np.array([(x + 0.5) * 13 / 53 - 0.5 < 6.5 for x in range(53)])
    assert 0 < left.sum() < 53
    expected = np.broadcast_to(left.astype(np.int64), (37, 53))
    np.testing.assert_array_equal(result.label_map, expected)


def test_slide_mode_batches_windows_and_returns_the_input_size():
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0])
    segmenter = _segmenter(model, mode="slide", window=8, stride=4, windows_per_batch=2)
    result = segmenter.segment(np.zeros((8, 24, 3), dtype=np.uint8))
    assert model.calls == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]  # 5 windows, 2 per pass
    assert result.label_map.shape == (8, 24)
    assert result.logits.shape == (4, 8, 24)


def test_flip_averages_in_the_mirrored_pass_mirrored_back():
    # The stand-in groups by position (left half: the cat group), whatever the pixels: in the mirrored pass the
    # cat group lands on the same half, so mirrored back it covers the other half, and each half averages both.
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0])
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    plain = _segmenter(model, bg_rule="similarity", bg_thresh=0.2).segment(image).logits
    model.calls.clear()
    flipped = _segmenter(model, bg_rule="similarity", bg_thresh=0.2, flip=True).segment(image)
    assert model.calls == [(1, 3, 8, 16), (1, 3, 8, 16)]
    torch.testing.assert_close(flipped.logits, (plain + plain.flip(-1)) / 2)
    torch.testing.assert_close(flipped.logits[1], torch.full((8, 16), 0.5))  # cosine 1 on one pass, 0 on the other
    assert (flipped.label_map == 1).all()  # 0.5 clears 0.2 on both halves


def test_model_runs_in_eval_mode_and_gets_its_mode_back():
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0]).train()
    _segmenter(model).segment(np.zeros((8, 8, 3), dtype=np.uint8))
    assert model.modes == [False]
    assert model.training


def test_bad_options_are_user_errors():
    model = KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0])
    for kwargs, message in [
        ({"mode": "tiles"}, "mode"),
        ({"bg_thresh": 1.5}, "bg_thresh"),
        ({"bg_thresh": -0.1}, r"\[0, 1\] with the affinity rule"),
        ({"bg_thresh": -1.5, "bg_rule": "similarity"}, r"\[-1, 1\] with the similarity rule"),
        ({"bg_rule": "sigmoid"}, "unknown background rule 'sigmoid'"),
        ({"topk": 0}, "topk"),
        ({"mode": "slide", "window": 8, "stride": 9}, "gaps"),
        ({"template": "a photo"}, "template"),
    ]:
        with pytest.raises(UserError, match=message):
            _segmenter(model, **kwargs)


class AutocastSpy(KnownGroupsModel):
    """Records the autocast dtype each ``encode_groups`` call runs under (None: no autocast)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.autocast: list[torch.dtype | None] = []

    def encode_groups(self, pixels):
        enabled = torch.is_autocast_enabled("cpu")
        self.autocast.append(torch.get_autocast_dtype("cpu") if enabled else None)
        return super().encode_groups(pixels)


@pytest.mark.parametrize(("precision", "native", "expected"), [
    ("fp32", True, None), ("bf16", False, torch.bfloat16), ("auto", True, torch.bfloat16), ("auto", False, None),
])  # fmt: skip
def test_precision_runs_only_the_image_encoder_under_autocast(monkeypatch, precision, native, expected):
    import annofree.precision

    monkeypatch.setattr(annofree.precision, "native_bf16", lambda device: (native, "as the test says"))
    model = AutocastSpy(NAMES, torch.stack([E[0], E[3]]), E[0] + 0.5 * E[1])
    segmenter = _segmenter(model, precision=precision)
    assert segmenter.precision == ("fp32" if expected is None else "bf16")
    result = segmenter.segment(np.zeros((8, 16, 3), dtype=np.uint8))
    assert model.autocast == [expected]
    assert result.logits.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # switched off again after the encoder
    reference = _segmenter(KnownGroupsModel(NAMES, torch.stack([E[0], E[3]]), E[0] + 0.5 * E[1]))
    # The encoder of this model computes nothing in autocast: the rest of the pipeline is the same float32.
    torch.testing.assert_close(result.logits, reference.segment(np.zeros((8, 16, 3), dtype=np.uint8)).logits)


def test_bf16_segmentation_of_a_real_model_gives_float32_logits(tiny_groupvit, tokenizer):
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    results = {
        precision: ZeroShotSegmenter(
            tiny_groupvit, NAMES, tokenizer=tokenizer, short_side=None, precision=precision
        ).segment(image)
        for precision in ("fp32", "bf16")
    }
    assert results["bf16"].logits.dtype == torch.float32
    assert results["bf16"].label_map.shape == results["fp32"].label_map.shape == (32, 32)
    assert not torch.equal(results["bf16"].logits, results["fp32"].logits)  # bf16 really ran
    assert torch.isfinite(results["bf16"].logits).all()


def test_bad_precisions_are_user_errors(tiny_groupvit, tokenizer):
    with pytest.raises(UserError, match="precision must be one of"):
        ZeroShotSegmenter(tiny_groupvit, NAMES, tokenizer=tokenizer, precision="fp64")
    onnx_like = SimpleNamespace(config=tiny_groupvit.config, device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(UserError, match="needs a torch model"):
        inference_precision(onnx_like, "bf16")
    assert inference_precision(onnx_like, "auto")[0] == "fp32"


# ----------------------------------------------------------------------------- the tiny real GroupViT


def test_sliding_over_one_window_equals_the_whole_image(tiny_groupvit, tokenizer):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    common = dict(template="a photo of a {}.", short_side=None, tokenizer=tokenizer, bg_thresh=0.3)
    whole = ZeroShotSegmenter(tiny_groupvit, ["cat", "dog", "grass"], mode="whole", **common).segment(image)
    slid = ZeroShotSegmenter(
        tiny_groupvit, ["cat", "dog", "grass"], mode="slide", window=32, stride=16, **common
    ).segment(image)
    torch.testing.assert_close(slid.logits, whole.logits, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(slid.label_map, whole.label_map)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_with_flip_a_mirrored_image_gets_the_mirrored_segmentation(tiny_groupvit, tokenizer, mode):
    image = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    segmenter = ZeroShotSegmenter(
        tiny_groupvit, ["cat", "dog", "grass"], template="a photo of a {}.", tokenizer=tokenizer, mode=mode,
        window=24, stride=16, short_side=None, bg_rule="similarity", bg_thresh=0.0, flip=True,
    )  # fmt: skip
    result, mirrored = segmenter.segment(image), segmenter.segment(np.ascontiguousarray(image[:, ::-1]))
    torch.testing.assert_close(mirrored.logits, result.logits.flip(-1), rtol=0, atol=1e-6)
    without = ZeroShotSegmenter(
        tiny_groupvit, ["cat", "dog", "grass"], template="a photo of a {}.", tokenizer=tokenizer, mode=mode,
        window=24, stride=16, short_side=None, bg_rule="similarity", bg_thresh=0.0,
    ).segment(image)  # fmt: skip
    assert not torch.allclose(without.logits, result.logits)  # the random model is not mirror-symmetric itself


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_output_has_the_input_size_for_odd_sizes(tiny_groupvit, tokenizer, mode):
    segmenter = ZeroShotSegmenter(
        tiny_groupvit,
        ["cat", "dog", "grass"],
        template="a photo of a {}.",
        tokenizer=tokenizer,
        mode=mode,
        window=24,
        stride=16,
        short_side=None,
        bg_thresh=0.2,
    )
    image = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    result = segmenter.segment(image)
    assert result.label_map.shape == (37, 53)
    assert result.logits.shape == (4, 37, 53)
    assert result.label_map.min() >= 0 and result.label_map.max() <= 3
    assert torch.equal(result.scores.argmax(0), torch.from_numpy(result.label_map))
    assert sum(result.fractions().values()) == pytest.approx(1.0)


def test_short_side_resize_works_at_its_own_size_and_answers_at_the_input_size(tiny_groupvit, tokenizer):
    segmenter = ZeroShotSegmenter(
        tiny_groupvit, ["cat", "dog"], template="a photo of a {}.", tokenizer=tokenizer, short_side=32
    )
    result = segmenter.segment(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    assert result.logits.shape == (3, 32, 48)
    assert result.label_map.shape == (20, 30)
    assert result.scores.shape == (3, 20, 30)


def test_a_batch_gives_the_same_results_as_single_images(tiny_groupvit, tokenizer):
    segmenter = ZeroShotSegmenter(
        tiny_groupvit, ["cat", "dog"], template="a photo of a {}.", tokenizer=tokenizer, short_side=None
    )
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (24, 28, 3), dtype=np.uint8) for _ in range(3)]
    batch = segmenter.segment_batch(images)
    for image, together in zip(images, batch, strict=True):
        alone = segmenter.segment(image)
        torch.testing.assert_close(together.logits, alone.logits, rtol=1e-5, atol=1e-6)


def test_class_embeddings_average_templates_in_eval_mode(tiny_groupvit, tokenizer):
    model = tiny_groupvit.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    templates = ["a photo of a {}.", "a drawing of the {}."]
    got = class_embeddings(model, ["cat", "dog"], templates, tokenizer=tokenizer)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics untouched
    model.eval()
    with torch.no_grad():
        per_template = torch.stack(
            [model.encode_text(tokenizer([t.format(c) for t in templates], context_length=16)) for c in ["cat", "dog"]]
        )
    assert got.shape == (2, per_template.shape[-1])
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(got[0], per_template[0, 0])  # both templates really count


def official_class_embedding(model, class_names, templates, tokenizer):
    """NVlabs/GroupViT ``build_text_embedding``, written out: tokens ``[N, T, L]`` -> the un-normalised projected
    prompt embeddings (``text_projector(text_encoder(...))``) -> mean over the T templates -> L2-normalised."""
    tokens = torch.stack([tokenizer([t.format(name) for t in templates], context_length=16) for name in class_names])
    num_classes, num_templates = tokens.shape[:2]
    with torch.no_grad():
        flat = tokens.reshape(num_classes * num_templates, -1)
        projected = model.text_projector(model.text_encoder(flat))
        return F.normalize(projected.reshape(num_classes, num_templates, -1).mean(dim=1), dim=-1)


@pytest.mark.parametrize("template_set", ["full", "subset"])
def test_class_embeddings_of_a_template_ensemble_follow_the_official_averaging(tiny_groupvit, tokenizer, template_set):
    from annofree.data.captions import TEMPLATE_SETS

    templates = list(TEMPLATE_SETS[template_set])
    assert len(templates) == {"full": 80, "subset": 7}[template_set]
    names = ["cat", "dog", "potted plant", "tv monitor"]
    got = class_embeddings(tiny_groupvit, names, templates, tokenizer=tokenizer)
    official = official_class_embedding(tiny_groupvit, names, templates, tokenizer)
    torch.testing.assert_close(got, official, rtol=0, atol=1e-6)
    # The law matters: averaging unit-norm prompt embeddings (annofree before) gives other class embeddings.
    with torch.no_grad():
        unit = torch.stack([tiny_groupvit.encode_text(tokenizer([t.format(n) for t in templates], 16)) for n in names])
    assert (F.normalize(unit.mean(dim=1), dim=-1) - official).abs().max() > 1e-4


# ------------------------------------------------------------- sides that are not a multiple of the patch


def _patch16_model():
    """A small GroupViT with the official patch size 16 (the tiny one's patch 4 divides 448 x 600)."""
    from dataclasses import replace

    from tests.inference.conftest import word_tokenizer
    from tests.tiny import tiny_groupvit_config

    config = tiny_groupvit_config(vocab_size=100)
    config = replace(config, image=replace(config.image, patch_size=16, img_size=64))
    torch.manual_seed(4)
    return GroupViT(config).eval(), word_tokenizer


def test_whole_mode_drops_the_patch_remainder_and_stretches_the_maps_as_the_official_code():
    model, tokenizer = _patch16_model()
    names = ["cat", "dog", "grass"]
    image = np.random.default_rng(5).integers(0, 256, (448, 600, 3), dtype=np.uint8)
    options = {"tokenizer": tokenizer, "short_side": None, "mode": "whole", "topk": 2, "with_background": False}
    official = ZeroShotSegmenter(model, names, patch_remainder="drop", **options)
    got = official.logits(image)[0]
    # Written out: the model sees the top-left 448 x 592 (600 = 37 x 16 + 8: the last 8 columns dropped), its
    # 28 x 37 grouping maps are resized bilinearly over the WHOLE 448 x 600 image, each pixel takes its group.
    with torch.no_grad():
        pixels = model.normalize_pixels(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        out = model.encode_groups(pixels[..., :448, :592])
        assert out.grid == (28, 37)
        maps = out.grouping.transpose(1, 2).reshape(1, -1, 28, 37)
        group_index = F.interpolate(maps, size=(448, 600), mode="bilinear", align_corners=False).argmax(dim=1)
        text = class_embeddings(model, names, tokenizer=tokenizer)
        affinity = group_class_affinity(out.group_embeds, out.image_embeds, text, model.scale(), topk=2)
        expected = pixel_logits(group_index, affinity, None)[0]
    assert got.shape == (3, 448, 600)
    torch.testing.assert_close(got, expected)
    # annofree's own rule (the image resized to the nearest multiple, 448 x 608) gives other scores.
    fitted = ZeroShotSegmenter(model, names, **options)
    assert fitted.settings.patch_remainder == "fit"
    assert not torch.allclose(fitted.logits(image)[0], got, atol=1e-3)
