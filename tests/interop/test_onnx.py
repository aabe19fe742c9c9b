"""ONNX export of GroupViT: onnxruntime's outputs equal PyTorch's, and so does the zero-shot segmentation."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import onnx
import pytest
import torch

from annofree.cli import main as cli_main
from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.data.tokenizer import tokenize
from annofree.errors import UserError
from annofree.inference.onnx_runtime import OnnxGroupViT
from annofree.inference.zero_shot import ZeroShotSegmenter
from annofree.interop.onnx import CONFIG_FILE, IMAGE_FILE, TEXT_FILE, export_onnx
from annofree.models import GroupViT
from annofree.weights import save_weights
from tests.tiny import tiny_densesiam, tiny_groupvit

CLASSES = ["cat", "dog", "grass", "sky", "road", "tree"]


def varied_groupvit(seed: int = 1) -> GroupViT:
    """The tiny GroupViT with its image weights drawn at std 1/sqrt(fan in), in eval mode.

    With the training initialisation (std 0.02) every patch joins the same group and every pixel gets the
    same class, so segmentations would agree trivially; these weights split images into several classes.
    """
    model = tiny_groupvit(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("img_"):
                continue
            if name.endswith("pos_embed"):
                param.normal_(0, 0.1)
            elif name.endswith("group_token"):
                param.normal_(0, 3.0)
            elif param.ndim >= 2:
                param.normal_(0, 1 / math.sqrt(param[0].numel()))
            elif not name.endswith("weight"):  # biases; norm scales stay 1
                param.normal_(0, 0.1)
    return model.eval()


def scene(seed: int = 0, height: int = 64, width: int = 96) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a few flat-coloured discs on black, with some noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    ys, xs = np.mgrid[:height, :width]
    for _ in range(6):
        cy, cx, radius = rng.integers(0, height), rng.integers(0, width), rng.integers(5, 20)
        image[(ys - cy) ** 2 + (xs - cx) ** 2 < radius**2] = rng.integers(0, 256, 3)
    return np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = varied_groupvit()
    directory = tmp_path_factory.mktemp("onnx")
    export_onnx(model, directory)
    return model, OnnxGroupViT(directory, threads=1)


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 32, 32), (2, 48, 64)])
def test_image_outputs_match_pytorch(exported, batch, height, width):
    model, onnx_model = exported
    pixels = model.normalize_pixels(torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        expected = model.encode_groups(pixels)
    got = onnx_model.encode_groups(pixels)
    assert got.grid == expected.grid == (height // 4, width // 4)
    for name in ("image_embeds", "group_embeds", "grouping"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-4, rtol=0)
    assert len(got.soft_assignments) == len(expected.soft_assignments) == 2
    for ours, theirs in zip(got.soft_assignments, expected.soft_assignments, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    with torch.no_grad():  # what zero-shot classification uses
        torch.testing.assert_close(onnx_model.encode_image(pixels), model.encode_image(pixels), atol=1e-4, rtol=0)


@pytest.mark.parametrize("texts", [["a photo of a cat."], ["a dog", "grass", "a photo of the sky, blue and wide"]])
def test_text_outputs_match_pytorch(exported, texts):
    model, onnx_model = exported
    ids = tokenize(texts, context_length=model.config.text.context_length)
    with torch.no_grad():
        expected = model.encode_text(ids)
    torch.testing.assert_close(onnx_model.encode_text(ids), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_model.scale(), model.scale().detach())


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_zero_shot_segmentation_equals_pytorch(exported, mode):
    model, onnx_model = exported
    options = {"short_side": None, "bg_thresh": 0.2, "mode": mode, "window": 32, "stride": 16}
    image = scene()
    expected = ZeroShotSegmenter(model, CLASSES, **options).segment(image)
    got = ZeroShotSegmenter(onnx_model, CLASSES, **options).segment(image)
    assert len(np.unique(expected.label_map)) >= 2  # a real segmentation, not one class everywhere
    agreement = float((got.label_map == expected.label_map).mean())
    assert agreement >= 0.999, agreement
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)


def test_export_writes_dynamic_graphs_and_their_config(tmp_path):
    model = tiny_groupvit().train()
    paths = export_onnx(model, tmp_path / "out")
    assert [p.name for p in paths] == [IMAGE_FILE, TEXT_FILE, CONFIG_FILE]
    assert model.training  # its mode is given back
    config = json.loads(paths[2].read_text())
    assert config["patch_size"] == 4 and config["context_length"] == 16
    assert config["pixel_mean"] == list(model.config.pixel_mean)
    assert config["logit_scale"] == pytest.approx(model.scale().item())
    assert config["model_config"] == model.config.to_dict()
    dims = [d.dim_param for d in onnx.load(str(paths[0])).graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]  # batch, height, width are named (dynamic); channels are 3
    text_dims = [d.dim_param or d.dim_value for d in onnx.load(str(paths[1])).graph.input[0].type.tensor_type.shape.dim]
    assert text_dims == ["texts", 16]


def test_export_errors(tmp_path):
    with pytest.raises(UserError, match="needs a GroupViT, not DenseSiam"):
        export_onnx(tiny_densesiam(), tmp_path / "ds")
    with pytest.raises(UserError, match="opset 13"):
        export_onnx(tiny_groupvit(), tmp_path / "old", opset=13)
    assert not (tmp_path / "old" / CONFIG_FILE).exists()


def test_runtime_errors_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no ONNX export here"):
        OnnxGroupViT(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not a readable ONNX export config"):
        OnnxGroupViT(tmp_path / "bad")
    (tmp_path / "bad" / CONFIG_FILE).write_text(json.dumps({"format": "annofree-groupvit-onnx"}))
    with pytest.raises(UserError, match="incomplete ONNX export config"):
        OnnxGroupViT(tmp_path / "bad")
    paths = export_onnx(tiny_groupvit(), tmp_path / "broken")
    with pytest.raises(UserError, match="a file; give the directory"):
        OnnxGroupViT(paths[0])
    paths[0].write_bytes(b"not a protobuf at all")
    with pytest.raises(UserError, match=r"image\.onnx: not a loadable ONNX model"):
        OnnxGroupViT(tmp_path / "broken")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(UserError, match="pip install onnxruntime"):
        OnnxGroupViT(tmp_path / "broken")


def test_the_onnx_model_tokenizes_as_the_pytorch_model(exported):
    model, onnx_model = exported
    texts = ["a photo of a circle.", "a star"]
    ids = onnx_model.tokenize(texts)
    torch.testing.assert_close(ids, model.tokenize(texts))
    with torch.no_grad():
        expected = model.eval().encode_text(ids)
    torch.testing.assert_close(onnx_model.encode_text(ids), expected, atol=1e-5, rtol=1e-4)
    short = ids[:, :8]  # shorter ids (the end token within them) are padded to the exported length
    torch.testing.assert_close(onnx_model.encode_text(short), expected, atol=1e-5, rtol=1e-4)
    context = model.config.text.context_length
    with pytest.raises(UserError, match=rf"above this model's context length {context}: tokenize with model"):
        onnx_model.encode_text(torch.zeros(1, context + 1, dtype=torch.long))


def test_image_sizes_must_be_whole_patches(exported):
    _, onnx_model = exported
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        onnx_model.encode_groups(torch.zeros(1, 3, 30, 32))


def test_evaluate_scores_an_onnx_export_as_it_scores_the_weights(exported, tmp_path, capsys):
    """``annofree evaluate --onnx DIR``: the same scores as ``--weights`` for the model that was exported."""
    model, onnx_model = exported
    weights = save_weights(tmp_path / "run" / "model.safetensors", model, "groupvit", model.config.to_dict())
    folder = tmp_path / "val"
    write_classes(folder, ["background", *CLASSES])
    segmenter = ZeroShotSegmenter(model, CLASSES, short_side=None, bg_thresh=0.2)
    for seed in range(3):  # labels: PyTorch's own segmentation, so the scores are far from chance
        image = scene(seed)
        write_segmentation_sample(folder, f"s{seed}", image, segmenter.segment(image).label_map.astype(np.uint8))
    options = ["--data", str(folder), "--bg-thresh", "0.2", "--short-side", "0", "--no-progress"]
    scores = {}
    for name, source in {"weights": ["--weights", str(weights)], "onnx": ["--onnx", str(onnx_model.directory)]}.items():
        assert cli_main(["evaluate", *source, *options, "--out", str(tmp_path / f"{name}.json")]) == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["weights"]["miou"] > 0.5
    assert scores["onnx"]["miou"] == pytest.approx(scores["weights"]["miou"], abs=1e-3)
    assert scores["onnx"]["weights"] == str(onnx_model.directory)
    capsys.readouterr()
    assert cli_main(["evaluate", "--weights", str(weights), "--onnx", str(onnx_model.directory), *options]) != 0
    assert "give exactly one of --weights" in capsys.readouterr().err
