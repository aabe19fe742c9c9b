"""``annofree evaluate --dataset``: benchmarks end to end from the command line, and ``annofree data``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from annofree import cli
from annofree.data.benchmarks.voc import voc_palette
from tests.data.benchmarks.helpers import write_image, write_label
from tests.data.benchmarks.test_coco import make_coco_object
from tests.data.benchmarks.test_cocostuff27 import make_cocostuff27
from tests.tiny import save_tiny_densesiam, save_tiny_groupvit


@pytest.fixture(scope="module")
def groupvit(tmp_path_factory):
    return save_tiny_groupvit(tmp_path_factory.mktemp("gv")).parent


@pytest.fixture(scope="module")
def densesiam(tmp_path_factory):
    return save_tiny_densesiam(tmp_path_factory.mktemp("ds"), clusters=27).parent


def annofree(*argv) -> int:
    return cli.main([str(a) for a in argv])


def write_voc(root, count: int = 20):
    """``count`` images of VOC's layout: JPEGs, palette labels with the 255 border, the val list."""
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    names = [f"2008_{i:06d}" for i in range(count)]
    for i, name in enumerate(names):
        height, width = (40, 56) if i % 2 else (48, 40)
        write_image(base / "JPEGImages" / f"{name}.jpg", height, width, tuple(int(v) for v in rng.integers(0, 256, 3)))
        raw = rng.choice(np.array([0, 8, 12, 15], dtype=np.uint8), size=(height, width))
        raw[:2] = 255
        write_label(base / "SegmentationClass" / f"{name}.png", raw, palette=voc_palette())
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def test_voc_fixture_of_20_images_end_to_end(tmp_path, groupvit, capsys):
    root = write_voc(tmp_path / "voc")
    out, predictions = tmp_path / "res" / "result.json", tmp_path / "pred"
    code = annofree(
        "evaluate", "--weights", groupvit, "--dataset", "voc", "--root", root, "--out", out,
        "--save-predictions", predictions, "--short-side", 64, "--window", 32, "--stride", 16, "--no-progress",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    assert result["num_images"] == 20 and result["dataset"] == "voc"
    assert len(result["per_class_iou"]) == 21 and len(result["without_background"]["per_class_iou"]) == 20
    settings = result["settings"]
    assert settings["bg_thresh"] == 0.95 and settings["mode"] == "slide" and settings["window"] == 32
    assert settings["prompt_names"]["diningtable"] == "table"
    assert "| diningtable |" in out.with_suffix(".md").read_text()
    assert "without background: mIoU" in captured.out
    ids = np.asarray(Image.open(predictions / "2008_000001.png"))
    assert ids.shape == (40, 56) and ids.max() <= 20
    assert len(list(predictions.glob("*_overlay.png"))) == 20


def test_a_missing_split_list_is_a_one_line_error(tmp_path, groupvit, capsys):
    root = write_voc(tmp_path / "voc", count=2)
    (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    assert annofree("evaluate", "--weights", groupvit, "--dataset", "voc", "--root", root) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "val.txt" in err


def test_a_dataset_needs_its_root(groupvit, capsys):
    assert annofree("evaluate", "--weights", groupvit, "--dataset", "voc") == 2
    assert "needs --root" in capsys.readouterr().err


def test_densesiam_on_cocostuff27_reports_things_and_stuff(tmp_path, densesiam, capsys):
    fixture = make_cocostuff27(tmp_path)
    out = tmp_path / "result.json"
    code = annofree("evaluate", "--weights", densesiam, "--dataset", "cocostuff27", "--root", fixture.root,
                    "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert len(result["per_class_iou"]) == 27 and result["num_images"] == 2  # the curated list
    assert set(result["groups"]) == {"things", "stuff"}
    assert result["settings"]["short_side"] == 320 and result["settings"]["crop"] == 320
    assert result["num_pixels"] > 0


def test_zero_shot_classification_of_a_class_folder(tmp_path, groupvit, capsys):
    for name, colour in (("cat", (200, 50, 50)), ("dog", (50, 200, 50))):
        for i in range(2):
            write_image(tmp_path / "val" / name / f"{i}.jpg", 40, 50, colour)
    out = tmp_path / "cls.json"
    code = annofree("evaluate", "--weights", groupvit, "--dataset", "imagenet", "--root", tmp_path / "val",
                    "--templates", "7", "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["num_images"] == 4 and result["templates"] == 7 and result["top5"] == 1.0  # 2 classes


def test_data_coco_object_converts_and_counts(tmp_path, capsys):
    fixture = make_coco_object(tmp_path)
    assert annofree("data", "coco-object", fixture.root, "--no-progress") == 0
    assert "wrote 3 COCO-Object label files" in capsys.readouterr().out
    assert len(list((fixture.root / "annotations" / "val2017").glob("*_instanceTrainIds.png"))) == 3


def test_skip_bad_counts_an_image_without_its_label_and_a_label_of_the_wrong_size(tmp_path, groupvit, capsys):
    root = write_voc(tmp_path / "voc", count=4)
    base = root / "VOCdevkit" / "VOC2012"
    (base / "SegmentationClass" / "2008_000001.png").unlink()
    write_label(base / "SegmentationClass" / "2008_000002.png", np.zeros((10, 10), np.uint8), palette=voc_palette())
    argv = ["evaluate", "--weights", groupvit, "--dataset", "voc", "--root", root, "--short-side", 0,
            "--mode", "whole", "--no-progress"]  # fmt: skip
    assert annofree(*argv) == 2
    assert "2008_000001" in capsys.readouterr().err  # strict by default: the error names the file
    out = tmp_path / "result.json"
    assert annofree(*argv, "--skip-bad", "--out", out) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["num_images"] == 2 and result["skipped"] == 2
    assert "2 unreadable samples skipped" in capsys.readouterr().out
