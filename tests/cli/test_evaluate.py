import json

import pytest

from annofree import cli
from tests.tiny import save_tiny_groupvit, write_noise_folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_groupvit(tmp_path_factory.mktemp("run")).parent


def annofree(monkeypatch, *argv) -> int:
    monkeypatch.setattr(cli, "COMMANDS", ["segment", "evaluate"])
    return cli.main([str(a) for a in argv])


@pytest.fixture
def folder(tmp_path):
    root = write_noise_folder(tmp_path / "data", ["background", "cat", "dog"])
    return root


def test_evaluate_prints_a_table_and_writes_json(tmp_path, folder, weights, monkeypatch, capsys):
    out = tmp_path / "result.json"
    code = annofree(
        monkeypatch, "evaluate", "--weights", weights, "--data", folder, "--out", out,
        "--short-side", 0, "--bg-thresh", 0.4, "--no-progress",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    assert result["num_images"] == 3
    assert result["num_pixels"] == 23 * 32 + 29 * 20 + 16 * 23  # first rows are ignored
    assert set(result["per_class_iou"]) == {"background", "cat", "dog"}
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["pixel_accuracy"] <= 1.0
    ious = [v for v in result["per_class_iou"].values() if v is not None]
    assert result["miou"] == pytest.approx(sum(ious) / len(ious))
    assert result["settings"]["bg_thresh"] == 0.4 and result["settings"]["mode"] == "whole"
    assert f"{100 * result['miou']:6.2f}" in captured.out
    for name in ("background", "cat", "dog", "mIoU", "pixel accuracy"):
        assert name in captured.out


def test_evaluate_with_the_similarity_rule_at_cosine_1_predicts_only_background(
    tmp_path, folder, weights, monkeypatch, capsys
):
    out = tmp_path / "result.json"
    code = annofree(
        monkeypatch, "evaluate", "--weights", weights, "--data", folder, "--out", out,
        "--short-side", 0, "--bg-rule", "similarity", "--bg-thresh", 1.0, "--flip", "--no-progress",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["settings"]["bg_rule"] == "similarity" and result["settings"]["bg_thresh"] == 1.0
    assert result["settings"]["flip"] is True
    assert result["per_class_accuracy"]["background"] == 1.0
    assert result["per_class_accuracy"]["cat"] == result["per_class_accuracy"]["dog"] == 0.0


def test_evaluate_bad_folder_is_a_one_line_error(tmp_path, weights, monkeypatch, capsys):
    code = annofree(monkeypatch, "evaluate", "--weights", weights, "--data", tmp_path / "nowhere")
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nowhere" in err


def test_a_folder_is_scored_with_the_weights_settings_a_benchmark_with_its_protocol(
    tmp_path, folder, monkeypatch, capsys
):
    import argparse

    from annofree.cli.evaluate import zero_shot_protocol_for
    from annofree.weights import load, write_stored_settings

    stored = {"bg_rule": "similarity", "bg_thresh": 1.0, "short_side": 24}  # a cosine of 1: all background
    write_stored_settings(save_tiny_groupvit(tmp_path / "run"), stored, synthetic=True)
    out = tmp_path / "result.json"
    code = annofree(monkeypatch, "evaluate", "--weights", tmp_path / "run", "--data", folder, "--out", out,
                    "--no-progress")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"from {tmp_path / 'run' / 'inference.json'}: bg_thresh=1 bg_rule=similarity short_side=24" in err
    assert "trained on synthetic scenes only" in err
    result = json.loads(out.read_text())
    assert result["settings"]["bg_rule"] == "similarity" and result["settings"]["short_side"] == 24
    assert result["per_class_accuracy"]["background"] == 1.0 and result["per_class_accuracy"]["cat"] == 0.0

    # A benchmark keeps its published protocol, and says that the weights' settings are not used.
    names = ("bg_thresh", "bg_rule", "mode", "window", "stride", "short_side", "topk", "flip", "prompts")
    args = argparse.Namespace(dataset="voc", **{**dict.fromkeys(names), "bg_thresh": 0.9})
    protocol, notes = zero_shot_protocol_for(args, load(tmp_path / "run"))
    assert protocol.settings.bg_rule == "affinity" and protocol.settings.mode == "slide"
    assert protocol.settings.bg_thresh == 0.9
    assert notes[0].startswith("zero-shot settings -- from the command line: bg_thresh=0.9; from the voc protocol:")
    assert "says bg_rule=similarity short_side=24; voc is scored with its published protocol" in notes[1]
