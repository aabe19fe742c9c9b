"""The main job end to end, tiny: render, score a baseline, train, score, write results, then segment with it."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from PIL import Image

import annofree
from annofree import cli
from annofree.demo import densesiam as demo_densesiam
from annofree.demo import groupvit as demo_groupvit
from annofree.demo import route_overrides
from annofree.demo.recipes import load_demo_config, untrained_model
from annofree.errors import UserError
from annofree.evaluation.protocols import zero_shot_protocol
from annofree.inference.settings import ZeroShotSettings

TINY = [
    "train.init_weights=null",  # the recipe's checkpoint is for its own model size, not this tiny one
    "demo.train_images=48",
    "demo.val_images=3",
    "demo.image_size=32",
    "data.image_size=32",
    "model.image.img_size=32",
    "model.image.embed_dim=32",
    "model.image.num_group_tokens=[4,0]",
    "model.image.num_output_groups=[4]",
    "model.text.width=32",
    "model.text.layers=1",
    "model.proj_hidden_dim=32",
    "model.embed_dim=16",
    "train.steps=3",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.log_every=1",
]
GROUPVIT = ["--method", "groupvit"]
TINY_DENSESIAM = [
    "demo.train_images=24",
    "demo.val_images=3",
    "demo.image_size=32",
    "data.image_size=32",
    "data.view1.size=24",
    "model.fpn_channels=16",
    "model.aux_dim=4",
    "train.steps=3",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.log_every=1",
    "demo.eval.short_side=48",
]


def test_demo_trains_scores_and_leaves_weights_that_segment(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert cli.main(["demo", *GROUPVIT, "--out", str(out), "--no-progress", *TINY]) == 0
    printed = capsys.readouterr().out
    run_dir = out / "groupvit"
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("miou", "miou_random_init", "pixel_accuracy", "train_seconds", "train_images"):
        assert key in results, key
    assert results["train_images"] == 3 * 8 and 0.0 <= results["miou"] <= 1.0
    assert f"{results['miou']:.3f}" in printed and "annofree segment" in printed
    assert len(list(run_dir.glob("scene_*.png"))) == 3
    assert Image.open(run_dir / "curves.png").format == "PNG"  # every run plots its log
    index = (out / "index.html").read_text()
    assert 'src="groupvit/curves.png"' in index and 'href="groupvit/results.json"' in index
    assert f"{results['miou']:.3f}" in index and str(out / "index.html") in printed
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)

    model = annofree.load(run_dir)  # the run directory is the weights
    assert model.config.image.img_size == 32

    # The command the demo suggests last runs; it scores as the demo did through the run's inference.json
    # (checked below), which the printed hint names.
    evaluation = results["evaluation"]
    assert evaluation["bg_rule"] == "similarity" and evaluation["short_side"] == 72 and evaluation["flip"]  # demo.yaml
    suggested = next(line for line in printed.splitlines() if "annofree segment YOUR_IMAGE.jpg" in line)
    assert str(run_dir / "inference.json") in printed and "--bg-rule" not in suggested
    image = tmp_path / "mine.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    seg = tmp_path / "seg"
    args = [str(image) if a == "YOUR_IMAGE.jpg" else str(seg) if a == "seg_out" else a for a in shlex.split(suggested)]
    assert args[0] == "annofree" and cli.main(args[1:]) == 0
    assert np.asarray(Image.open(seg / "mine.png")).shape == (40, 50)

    # The run keeps the settings it was scored with: `annofree segment` without options uses them and says so.
    stored = json.loads((run_dir / "inference.json").read_text())
    folder = zero_shot_protocol("folder").settings  # what the demo's folder scoring starts from
    scored = ZeroShotSettings.from_dict({k: v for k, v in evaluation.items() if k != "classes"}, base=folder)
    assert ZeroShotSettings.from_dict(stored["zero_shot"]) == scored and stored["synthetic"] is True
    capsys.readouterr()
    bare = [str(image), "--weights", str(run_dir), "--classes", "circle,star", "--out", str(tmp_path / "bare")]
    assert cli.main(["segment", *bare]) == 0
    err = capsys.readouterr().err
    assert f"from {run_dir / 'inference.json'}: bg_thresh={evaluation['bg_thresh']:g} bg_rule=similarity" in err
    assert "short_side=72" in err and "flip=on" in err and "trained on synthetic scenes only" in err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "bare" / "mine.png")),
                                  np.asarray(Image.open(seg / "mine.png")))  # fmt: skip


def test_a_second_run_reuses_the_rendered_scenes(tmp_path):
    out = tmp_path / "demo_out"
    assert cli.main(["demo", *GROUPVIT, "--out", str(out), "--no-progress", *TINY]) == 0
    stamp = (out / "data" / "train" / "000000.tar").stat().st_mtime_ns
    assert cli.main(["demo", *GROUPVIT, "--out", str(out), "--no-progress", *TINY, "train.steps=1"]) == 0
    assert (out / "data" / "train" / "000000.tar").stat().st_mtime_ns == stamp


def test_demo_from_a_checkpoint_also_runs_briefly_from_scratch(tmp_path, capsys):
    first = tmp_path / "first"
    assert cli.main(["demo", *GROUPVIT, "--out", str(first), "--no-progress", *TINY]) == 0
    out = tmp_path / "demo_out"
    start = first / "groupvit"
    args = [*TINY, f"train.init_weights={start}", "+demo.scratch={train: {steps: 2}}"]
    assert cli.main(["demo", *GROUPVIT, "--out", str(out), "--no-progress", *args]) == 0
    results = json.loads((out / "groupvit" / "results.json").read_text())
    assert results["init_weights"] == str(start)
    assert results["miou_init_weights"] == json.loads((start / "results.json").read_text())["miou"]
    assert results["scratch_run"]["train_steps"] == 2 and results["train_steps"] == 3
    assert (out / "groupvit_scratch" / "model.safetensors").is_file()
    assert "make reproduce-demo" in capsys.readouterr().out


def test_densesiam_demo_scores_clusters_against_both_kmeans_baselines(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert cli.main(["demo", "--method", "densesiam", "--out", str(out), "--no-progress", *TINY_DENSESIAM]) == 0
    run_dir = out / "densesiam"
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("miou", "pixel_accuracy", "miou_kmeans_pixels", "miou_random_init", "train_seconds"):
        assert 0.0 <= results[key] <= 1.0 or key == "train_seconds", key
    assert results["train_images"] == 3 * 8 and results["num_clusters"] == 5 and results["matching"] == "hungarian"
    assert set(results["groups"]) == {"things", "stuff"}  # the texture scenes mark their objects as things
    assert len(list(run_dir.glob("scene_*.png"))) == 3
    printed = capsys.readouterr().out
    assert f"{results['miou']:.3f}" in printed and f"{results['miou_kmeans_pixels']:.3f}" in printed
    assert annofree.load(run_dir).config.dense_dim == 5  # the run directory is the weights

    # Scored at the recipe's eval size (128 by default, 48 here); the untrained baseline at that size and at 32.
    assert results["eval_short_side"] == 48 and 0.0 <= results["miou_random_init_native"] <= 1.0
    assert "--short-side 48" in printed

    # What the closing lines suggest works: evaluate the weights on the held-out scenes from the CLI.
    assert cli.main(["evaluate", "--weights", str(run_dir), "--data", str(out / "data_textures" / "val"),
                     "--short-side", "48", "--no-progress"]) == 0  # fmt: skip


def test_densesiam_baseline_scores_untrained_features_at_the_eval_size(monkeypatch):
    """The k-means baseline on untrained features sees the input at the size the trained model is scored at."""
    config = load_demo_config(None, [o for o in TINY_DENSESIAM if o.startswith(("model.", "data."))], "densesiam")
    sizes = []

    def recording_model(cfg):
        model = untrained_model(cfg)
        dense = model.dense_features
        model.dense_features = lambda pixels: sizes.append(tuple(pixels.shape[-2:])) or dense(pixels)
        return model

    monkeypatch.setattr(demo_densesiam, "untrained_model", recording_model)
    rng = np.random.default_rng(0)
    samples = [
        (f"s{i}", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), np.zeros((32, 32), np.uint8)) for i in range(2)
    ]
    scores = demo_densesiam.baselines(config, samples, ["background", "a"], {}, short_side=48)
    assert set(scores) == {"kmeans_pixels", "random_init", "random_init_native"}
    assert set(sizes) == {(48, 48), (32, 32)}
    sizes.clear()
    assert set(demo_densesiam.baselines(config, samples, ["background", "a"], {})) == {"kmeans_pixels", "random_init"}
    assert set(sizes) == {(32, 32)}


def test_both_demos_run_by_default_with_overrides_routed_by_prefix(tmp_path, capsys):
    out = tmp_path / "demo_out"
    routed = [f"groupvit.{o}" for o in TINY] + [f"densesiam.{o}" for o in TINY_DENSESIAM]
    assert cli.main(["demo", "--out", str(out), "--no-progress", *routed, "densesiam.train.steps=2"]) == 0
    assert json.loads((out / "groupvit" / "results.json").read_text())["train_steps"] == 3
    assert json.loads((out / "densesiam" / "results.json").read_text())["train_steps"] == 2
    index = (out / "index.html").read_text()
    for method in ("groupvit", "densesiam"):
        assert f'src="{method}/curves.png"' in index and f'src="{method}/scene_000000.png"' in index

    # `annofree report` on the DenseSiam run: the plot redrawn, the summary with the collapse monitor.
    (out / "densesiam" / "curves.png").unlink()
    assert cli.main(["report", str(out / "densesiam")]) == 0
    printed = capsys.readouterr().out
    assert (out / "densesiam" / "curves.png").is_file()
    assert "steps: 2/2" in printed and "std_pix:" in printed and "loss_pix: final" in printed


def test_overrides_must_say_which_demo_they_are_for():
    both = ["groupvit", "densesiam"]
    assert route_overrides(["groupvit.train.steps=2", "+densesiam.x.y=1"], both) == {
        "groupvit": ["train.steps=2"],
        "densesiam": ["+x.y=1"],
    }
    assert route_overrides(["train.steps=2"], ["densesiam"]) == {"densesiam": ["train.steps=2"]}
    with pytest.raises(UserError, match="say which demo"):
        route_overrides(["train.steps=2"], both)
    with pytest.raises(UserError, match="does not run here"):
        route_overrides(["groupvit.train.steps=2"], ["densesiam"])


def test_a_recipe_given_with_config_picks_its_demo(tmp_path, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("_base_: " + str(annofree.demo.default_config_path("densesiam")) + "\n")
    out = tmp_path / "demo_out"
    assert cli.main(["demo", "--config", str(recipe), "--out", str(out), "--no-progress", *TINY_DENSESIAM]) == 0
    assert (out / "densesiam" / "results.json").is_file() and not (out / "groupvit").exists()
    assert cli.main(["demo", "--config", str(recipe), "--method", "groupvit", "--out", str(out)]) == 2
    assert "densesiam recipe" in capsys.readouterr().err


@pytest.mark.parametrize("side", [0, -3, 1.5, "big", True])
def test_densesiam_demo_refuses_a_bad_eval_size(side):
    with pytest.raises(UserError, match=r"demo\.eval\.short_side must be a positive integer"):
        demo_densesiam.eval_short_side({"eval": {"short_side": side}})
    assert demo_densesiam.eval_short_side({"eval": {"short_side": 96}}) == 96
    assert demo_densesiam.eval_short_side({}) is None


def test_a_relative_checkpoint_is_found_next_to_the_recipe_that_names_it(tmp_path):
    packaged = annofree.demo.default_config_path("groupvit")
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"_base_: {packaged}\ntrain: {{steps: 5}}\n")
    config = load_demo_config(mine)
    assert config["train"]["steps"] == 5
    assert config["train"]["init_weights"] == str((packaged.parent / "../../demo/weights/groupvit").resolve())

    (tmp_path / "start").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "own.yaml").write_text(f"_base_: {packaged}\ntrain: {{init_weights: ../start}}\n")
    (tmp_path / "top.yaml").write_text("_base_: sub/own.yaml\n")
    assert load_demo_config(tmp_path / "top.yaml")["train"]["init_weights"] == str(tmp_path / "start")


def test_groupvit_demo_eval_settings_default_to_whole_scenes_and_refuse_unknown_keys():
    demo = {"image_size": 64, "eval": {"bg_thresh": 0.2, "bg_rule": "similarity"}}
    assert demo_groupvit.eval_settings(demo) == {
        "short_side": 64, "mode": "whole", "bg_thresh": 0.2, "bg_rule": "similarity"
    }  # fmt: skip
    assert demo_groupvit.eval_settings({**demo, "eval": {"short_side": 72}})["short_side"] == 72
    with pytest.raises(UserError, match=r"unknown demo\.eval\.bg_threshold"):
        demo_groupvit.eval_settings({**demo, "eval": {"bg_threshold": 0.2}})
