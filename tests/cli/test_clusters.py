"""``annofree segment`` and ``annofree evaluate`` with DenseSiam weights (clusters), and the dispatch errors."""

import json

import numpy as np
import pytest
from PIL import Image

from annofree import cli
from annofree.inference import clusters as clusters_module
from annofree.inference.clusters import ClusterSegmenter
from annofree.weights import load
from tests.tiny import save_tiny_densesiam, save_tiny_groupvit, write_noise_folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_densesiam(tmp_path_factory.mktemp("ds"), clusters=3).parent


def annofree(monkeypatch, *argv) -> int:
    monkeypatch.setattr(cli, "COMMANDS", ["segment", "evaluate"])
    return cli.main([str(a) for a in argv])


def _rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _one_line_error(capsys, text: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("annofree: error:") and text in err, err


def test_segment_writes_cluster_maps_and_overlays(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(30, 40)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(21, 27, 1)).save(tmp_path / "b.jpg")
    out = tmp_path / "out"
    sides = []  # the short side each image is resized to: the DenseSiam protocol's 320, as in the API and the app
    resize = clusters_module.resize_short_side
    monkeypatch.setattr(clusters_module, "resize_short_side", lambda x, side: sides.append(side) or resize(x, side))
    code = annofree(monkeypatch, "segment", tmp_path / "a.png", tmp_path / "b.jpg", "--weights", weights, "--out", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sides == [320, 320]
    expected = (
        ClusterSegmenter(load(weights), short_side=320).segment(np.array(Image.open(tmp_path / "a.png"))).label_map
    )
    ids = Image.open(out / "a.png")
    assert ids.mode == "L" and ids.size == (40, 30)
    np.testing.assert_array_equal(np.asarray(ids), expected)
    assert Image.open(out / "b.png").size == (27, 21) and np.asarray(Image.open(out / "b.png")).max() < 3
    overlay = Image.open(out / "a_overlay.png")
    assert overlay.width > 40 and overlay.height >= 30  # image plus legend panel
    assert not (out / "a.json").exists()
    assert "clusters (cluster" in captured.out


def test_segment_short_side_and_a_broken_file_in_the_batch(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(37, 53)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    out = tmp_path / "out"
    code = annofree(
        monkeypatch, "segment", tmp_path / "broken.png", tmp_path / "good.png", "--weights", weights,
        "--out", out, "--short-side", 24,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "broken.png" in err and "Traceback" not in err
    assert Image.open(out / "good.png").size == (53, 37)
    assert not (out / "broken.png").exists()


def test_segment_rejects_classes_for_densesiam_and_needs_them_for_groupvit(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
    code = annofree(
        monkeypatch, "segment", tmp_path / "x.png", "--weights", weights, "--classes", "cat", "--out", tmp_path / "o"
    )
    assert code == 2
    _one_line_error(capsys, "--classes: DenseSiam weights segment into unnamed clusters")
    groupvit = save_tiny_groupvit(tmp_path / "gv")
    code = annofree(monkeypatch, "segment", tmp_path / "x.png", "--weights", groupvit, "--out", tmp_path / "o")
    assert code == 2
    _one_line_error(capsys, "--classes is required with GroupViT weights")


@pytest.fixture
def folder(tmp_path):
    root = write_noise_folder(tmp_path / "data", ["sky", "grass", "cow"])
    (root / "things.txt").write_text("cow\n")
    return root


def test_evaluate_matches_clusters_and_writes_json(tmp_path, folder, weights, monkeypatch, capsys):
    out = tmp_path / "result.json"
    code = annofree(monkeypatch, "evaluate", "--weights", weights, "--data", folder, "--out", out, "--no-progress")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    assert result["num_images"] == 3 and result["num_pixels"] == 23 * 32 + 29 * 20 + 16 * 23
    assert set(result["per_class_iou"]) == {"sky", "grass", "cow"}
    assert result["matching"] == "hungarian" and sorted(result["mapping"]) == [0, 1, 2]
    assert set(result["groups"]) == {"things", "stuff"}
    assert result["groups"]["things"]["miou"] == result["per_class_iou"]["cow"]
    assert result["settings"] == {"short_side": None, "matching": "hungarian"}
    for text in ("mIoU", "pixel accuracy", "things mIoU", "stuff mIoU", "3 clusters, hungarian matching"):
        assert text in captured.out


def test_evaluate_with_a_linear_probe_beside_the_clusters(tmp_path, folder, weights, monkeypatch, capsys):
    out = tmp_path / "result.json"
    argv = ["evaluate", "--weights", weights, "--data", folder, "--linear-probe", folder, "--out", out, "--no-progress"]
    code = annofree(monkeypatch, *argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    probe = result["linear_probe"]
    assert set(probe["per_class_iou"]) == {"sky", "grass", "cow"} and probe["num_pixels"] == result["num_pixels"]
    assert probe["probe"]["train_images"] == 3 and 0 <= probe["miou"] <= 1
    assert "linear probe (trained on" in captured.out
    assert "## Linear probe" in out.with_suffix(".md").read_text()
    groupvit = save_tiny_groupvit(tmp_path / "gv")
    assert annofree(monkeypatch, "evaluate", "--weights", groupvit, "--data", folder, "--linear-probe", folder) == 2
    _one_line_error(capsys, "--linear-probe trains on DenseSiam's dense features")


def test_evaluate_more_clusters_than_classes(tmp_path, folder, monkeypatch, capsys):
    many = save_tiny_densesiam(tmp_path / "many", clusters=5)
    assert annofree(monkeypatch, "evaluate", "--weights", many, "--data", folder, "--no-progress") == 2
    _one_line_error(capsys, "use many-to-one matching, --many-to-one")
    argv = ["evaluate", "--weights", many, "--data", folder, "--no-progress", "--many-to-one", "--short-side", 16]
    assert annofree(monkeypatch, *argv) == 0
    assert "5 clusters, many-to-one matching" in capsys.readouterr().out


def test_many_to_one_is_an_error_for_groupvit(tmp_path, folder, monkeypatch, capsys):
    groupvit = save_tiny_groupvit(tmp_path / "gv")
    code = annofree(monkeypatch, "evaluate", "--weights", groupvit, "--data", folder, "--many-to-one")
    assert code == 2
    _one_line_error(capsys, "--many-to-one matches DenseSiam clusters")
