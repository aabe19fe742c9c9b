"""Zero-shot classification: both layouts, the centre view, top-1/top-5 by hand, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from annofree.errors import UserError
from annofree.evaluation.classification import center_view, classify_zero_shot, open_classification_set

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class ColourModel(nn.Module):
    """The image embedding is the mean RGB colour; the text of a colour name is that colour's axis."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(image=SimpleNamespace(img_size=16), text=SimpleNamespace(context_length=4))

    def tokenize(self, texts, context_length=77):
        index = [next(axis for axis, n in enumerate(COLOURS) if n in t) for t in texts]
        return torch.tensor(index)[:, None].expand(-1, context_length).clone()

    def encode_text(self, ids):
        return F.one_hot(ids[:, 0], 3).float()

    def normalize_pixels(self, pixels):
        return pixels

    def encode_image(self, pixels):
        return F.normalize(pixels.mean(dim=(2, 3)), dim=-1)


def _save(path, colour, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_class_folders_top1_and_top5_by_hand(tmp_path):
    for name, colour in COLOURS.items():
        _save(tmp_path / name / "a.jpg", colour)
    _save(tmp_path / "blue" / "purple.png", (255, 0, 200))  # labelled blue, looks more red: top-1 wrong
    (tmp_path / "green" / "broken.jpg").write_bytes(b"not an image")
    data = open_classification_set(tmp_path)
    assert data.class_names == ["blue", "green", "red"] and len(data.paths) == 5
    model = ColourModel(data.class_names)
    result = classify_zero_shot(model, data, ["a photo of a {}."], progress=False, tokenizer=model.tokenize)
    # blue/a, green/a, red/a right; purple (blue) is taken for red, with blue second.
    assert result["num_images"] == 4 and len(result["skipped"]) == 1
    assert result["top1"] == pytest.approx(3 / 4) and result["top5"] == 1.0


def test_validation_list_with_class_names_and_a_wrong_top1(tmp_path):
    _save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", COLOURS["red"])
    _save(tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG", COLOURS["green"])
    _save(tmp_path / "val" / "ILSVRC2012_val_00000003.JPEG", (200, 0, 255))  # more blue than red
    _save(tmp_path / "val" / "ILSVRC2012_val_00000004.JPEG", (255, 0, 200))  # labelled blue, looks red
    (tmp_path / "val.txt").write_text(
        "val/ILSVRC2012_val_00000001.JPEG 0\nval/ILSVRC2012_val_00000002.JPEG 1\n"
        "val/ILSVRC2012_val_00000003.JPEG 2\nval/ILSVRC2012_val_00000004.JPEG 2\n"
    )
    (tmp_path / "names.txt").write_text("red\ngreen\nblue\n")
    data = open_classification_set(tmp_path, tmp_path / "names.txt", tmp_path / "val.txt")
    model = ColourModel(data.class_names)
    result = classify_zero_shot(
        model, data, ["itap of a {}.", "art of the {}."], progress=False, tokenizer=model.tokenize
    )
    assert result["top1"] == pytest.approx(3 / 4) and result["top5"] == 1.0 and result["templates"] == 2


def test_center_view_keeps_the_middle(tmp_path):
    image = np.zeros((100, 300, 3), dtype=np.uint8)
    image[:, 140:160] = 255  # a white stripe in the middle
    view = center_view(image, 64)
    assert view.shape == (64, 64, 3)
    assert view[:, 32].min() > 200 and view[:, 0].max() < 30


def test_bad_layouts_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no class folders"):
        open_classification_set(tmp_path)
    (tmp_path / "val.txt").write_text("a.jpg zero\n")
    with pytest.raises(UserError, match=r"val\.txt: line 1"):
        open_classification_set(tmp_path, tmp_path / "n.txt", tmp_path / "val.txt")
    (tmp_path / "val.txt").write_text("a.jpg 3\n")
    (tmp_path / "n.txt").write_text("cat\n")
    with pytest.raises(UserError, match="no name"):
        open_classification_set(tmp_path, tmp_path / "n.txt", tmp_path / "val.txt")


def test_center_view_is_the_official_validation_transform():
    # torchvision Resize(int(256 / 224 * 64) = 73) on 100 x 300: 73 x int(73 * 300 / 100) = 73 x 219, bilinear;
    # CenterCrop(64): top round(4.5) = 4, left round(77.5) = 78 (half to even, as torchvision's int(round(...))).
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)
    resized = np.asarray(Image.fromarray(image).resize((219, 73), Image.BILINEAR))
    np.testing.assert_array_equal(center_view(image, 64), resized[4:68, 78:142])
    tall = rng.integers(0, 256, (301, 200, 3), dtype=np.uint8)  # 200 -> 73, 301 -> int(73 * 301 / 200) = 109
    resized = np.asarray(Image.fromarray(tall).resize((73, 109), Image.BILINEAR))
    np.testing.assert_array_equal(center_view(tall, 64), resized[22:86, 4:68])
