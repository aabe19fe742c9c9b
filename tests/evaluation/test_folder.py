from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annofree.data.captions import PROMPT_TEMPLATES
from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.errors import UserError
from annofree.evaluation.folder import evaluate_folder
from annofree.models import GroupOutput

E = torch.eye(4)


class HalvesModel(nn.Module):
    """GroupViT stand-in: group 0 is the left half of the image, group 1 the right half.

    The class named ``names[i]`` has text embedding ``e_i``; the groups' embeddings are given.
    """

    def __init__(self, names, left, right):
        super().__init__()
        self.names = names
        self.group_embeds = F.normalize(torch.stack([left, right]), dim=-1)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(image=SimpleNamespace(patch_size=4), text=SimpleNamespace(context_length=4))

    def tokenize(self, texts, context_length=77):
        index = [next(i for i, n in enumerate(self.names) if f" {n}." in t) for t in texts]
        return torch.tensor(index)[:, None].expand(-1, context_length).clone()

    def encode_text(self, token_ids):
        return F.one_hot(token_ids[:, 0], 4).float()

    def normalize_pixels(self, pixels):
        return pixels

    def scale(self):
        return torch.tensor(10.0)

    def encode_groups(self, pixels):
        batch, _, height, width = pixels.shape
        h, w = height // 4, width // 4
        right = (torch.arange(w) >= w / 2).float().expand(h, w).reshape(-1)
        grouping = torch.stack([1 - right, right], dim=-1)
        return GroupOutput(
            image_embeds=F.normalize(self.group_embeds.sum(0), dim=-1).expand(batch, -1),
            group_embeds=self.group_embeds.expand(batch, -1, -1),
            grouping=grouping.expand(batch, -1, -1),
            soft_assignments=[],
            grid=(h, w),
        )


def _label(left, right):
    label = np.empty((8, 16), dtype=np.uint8)
    label[:, :8], label[:, 8:] = left, right
    return label


def test_evaluate_folder_with_background_by_hand(tmp_path):
    write_classes(tmp_path, ["background", "cat", "dog"])
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    write_segmentation_sample(tmp_path, "a", image, _label(1, 0))  # exactly what is predicted
    write_segmentation_sample(tmp_path, "b", image, _label(1, 1))  # the right half is missed
    write_segmentation_sample(tmp_path, "c", image, _label(2, 255))  # dog called cat; the rest ignored
    # Left group is a cat; the right group matches nothing (uniform affinity) and falls under the threshold.
    model = HalvesModel(["cat", "dog"], E[0], E[3])
    results = evaluate_folder(model, tmp_path, short_side=None, tokenizer=model.tokenize, progress=False)
    # (gt, pred) counts: (0,0) 64, (1,1) 128, (1,0) 64, (2,1) 64.
    assert results["per_class_iou"] == {
        "background": pytest.approx(64 / 128),
        "cat": pytest.approx(128 / 256),
        "dog": 0.0,
    }
    assert results["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert results["pixel_accuracy"] == pytest.approx(192 / 320)
    assert results["mean_accuracy"] == pytest.approx((1 + 128 / 192 + 0) / 3)
    assert results["num_images"] == 3 and results["num_pixels"] == 320


def test_evaluate_folder_without_background_queries_every_class(tmp_path):
    write_classes(tmp_path, ["cat", "dog", "sky"])
    write_segmentation_sample(tmp_path, "a", np.zeros((8, 16, 3), dtype=np.uint8), _label(0, 2))
    model = HalvesModel(["cat", "dog", "sky"], E[0], E[2])
    results = evaluate_folder(model, tmp_path, short_side=None, tokenizer=model.tokenize, progress=False)
    assert results["per_class_iou"] == {"cat": 1.0, "dog": None, "sky": 1.0}  # dog: in neither -> None
    assert results["miou"] == 1.0


def test_evaluate_folder_limit_and_errors(tmp_path):
    write_classes(tmp_path, ["background", "cat"])
    for name in "abc":
        write_segmentation_sample(tmp_path, name, np.zeros((8, 16, 3), dtype=np.uint8), _label(1, 0))
    model = HalvesModel(["cat"], E[0], E[3])
    results = evaluate_folder(model, tmp_path, short_side=None, tokenizer=model.tokenize, progress=False, limit=2)
    assert results["num_images"] == 2
    with pytest.raises(UserError, match="no such segmentation folder"):
        evaluate_folder(model, tmp_path / "missing", tokenizer=model.tokenize)
    only_background = tmp_path / "bg"
    write_classes(only_background, ["background"])
    write_segmentation_sample(only_background, "a", np.zeros((8, 16, 3), dtype=np.uint8), _label(0, 0))
    with pytest.raises(UserError, match="only the background"):
        evaluate_folder(model, only_background, tokenizer=model.tokenize)


def test_batched_evaluation_equals_one_image_at_a_time(tiny_groupvit_bpe):
    from annofree.evaluation.folder import evaluate_samples
    from annofree.inference.zero_shot import ZeroShotSegmenter

    rng = np.random.default_rng(0)
    sizes = [(32, 32)] * 5 + [(24, 40)] * 3 + [(32, 32)] * 2  # size changes split the batches
    samples = [
        (f"s{i}", rng.integers(0, 256, (*hw, 3), dtype=np.uint8), rng.integers(0, 3, hw, dtype=np.uint8))
        for i, hw in enumerate(sizes)
    ]
    segmenter = ZeroShotSegmenter(tiny_groupvit_bpe, ["circle", "star"], bg_thresh=0.3, short_side=None)
    names = ["background", "circle", "star"]
    one = evaluate_samples(segmenter, samples, names, progress=False, batch_size=1)
    batched = evaluate_samples(segmenter, samples, names, progress=False, batch_size=4)
    assert one == batched and one["num_images"] == 10


def test_a_label_of_the_wrong_size_names_the_sample(tiny_groupvit_bpe):
    from annofree.evaluation.folder import evaluate_samples
    from annofree.inference.zero_shot import ZeroShotSegmenter

    segmenter = ZeroShotSegmenter(tiny_groupvit_bpe, ["circle"], short_side=None)
    samples = [("odd", np.zeros((32, 32, 3), np.uint8), np.zeros((30, 32), np.uint8))]
    with pytest.raises(UserError, match="odd: label size"):
        evaluate_samples(segmenter, samples, ["background", "circle"], progress=False)


@pytest.fixture
def tiny_groupvit_bpe():
    from tests.tiny import tiny_groupvit

    return tiny_groupvit().eval()


def test_scores_without_background_come_from_the_same_pass(tmp_path):
    """VOC20 / Context59 style: background pixels ignored, every pixel given its best object class."""
    write_classes(tmp_path, ["background", "cat", "dog"])
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    write_segmentation_sample(tmp_path, "a", image, _label(1, 0))
    write_segmentation_sample(tmp_path, "b", image, _label(1, 1))
    write_segmentation_sample(tmp_path, "c", image, _label(2, 255))
    model = HalvesModel(["cat", "dog"], E[0], E[3])
    results = evaluate_folder(model, tmp_path, short_side=None, tokenizer=model.tokenize, progress=False)
    objects = results["without_background"]
    # The right group ties between cat and dog; the first class keeps a tie, so every pixel is "cat".
    # (gt, pred) counts: (cat, cat) 64 + 128, (dog, cat) 64; background and 255 pixels are not counted.
    assert objects["per_class_iou"] == {"cat": pytest.approx(192 / 256), "dog": 0.0}
    assert objects["miou"] == pytest.approx(0.375)
    assert objects["pixel_accuracy"] == pytest.approx(0.75) and objects["num_pixels"] == 256


def test_a_protocol_prompts_edited_names_and_reports_the_data_set_names():
    from annofree.evaluation.folder import evaluate_dataset
    from annofree.evaluation.protocols import ZeroShotProtocol
    from annofree.inference.settings import ZeroShotSettings

    class Tiny:
        classes = ("background", "diningtable", "dog")
        background = True
        skipped = ("broken.jpg",)

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return "x", np.zeros((8, 16, 3), dtype=np.uint8), _label(1, 2)

    model = HalvesModel(["table", "dog"], E[0], E[1])  # the model knows "table", not "diningtable"
    protocol = ZeroShotProtocol("voc", ZeroShotSettings(bg_thresh=0.5, short_side=None), {"diningtable": "table"})
    results = evaluate_dataset(model, Tiny(), protocol, tokenizer=model.tokenize, progress=False)
    assert results["per_class_iou"] == {"background": None, "diningtable": 1.0, "dog": 1.0}
    assert results["skipped"] == 1


@pytest.mark.parametrize(("prompts", "per_class"), [("single", 1), ("ensemble", len(PROMPT_TEMPLATES))])
def test_the_prompts_setting_decides_the_templates(tmp_path, prompts, per_class):
    write_classes(tmp_path, ["background", "cat", "dog"])
    write_segmentation_sample(tmp_path, "a", np.zeros((8, 16, 3), dtype=np.uint8), _label(1, 0))
    model = HalvesModel(["cat", "dog"], E[0], E[3])
    prompted: list[str] = []

    def tokenizer(texts, context_length):
        prompted.extend(texts)
        return torch.zeros(len(texts), context_length, dtype=torch.long)

    evaluate_folder(model, tmp_path, short_side=None, tokenizer=tokenizer, progress=False, prompts=prompts)
    assert len(prompted) == 2 * per_class
