"""`annofree train` with bad configs and arguments: each is refused before any work with one line naming the key.

The sweep runs every case through the command-line entry (``annofree.cli.main``, in-process), a few through a
real subprocess (no traceback reaches stderr), and checks that a refused run leaves nothing in ``--out``.
Every config shipped in ``configs/`` and ``src/annofree/configs/`` still passes the same checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from annofree.cli import main
from annofree.engine.checkpoint import CONFIG_NAME, STATE_FORMAT, STATE_NAME
from annofree.engine.config import check_method_config, load_config, resolve_engine_config, save_config
from annofree.methods import get_method

REPO = Path(__file__).resolve().parents[2]
PACKAGED = REPO / "src" / "annofree" / "configs"
GROUPVIT = PACKAGED / "groupvit" / "synth_tiny.yaml"
DENSESIAM = PACKAGED / "densesiam" / "synth_tiny.yaml"

# (id, overrides on GroupViT's synth_tiny.yaml, what the message must name)
GROUPVIT_OVERRIDES = [
    ("model-unknown-key", ["+model.image.bogus=1"], "model.image.bogus"),
    ("model-unknown-top", ["+model.bogus=1"], "model.bogus"),
    ("model-typo-did-you-mean", ["+model.image.embed_dimm=64"], "did you mean model.image.embed_dim"),
    ("embed-dim-text", ["model.image.embed_dim=abc"], "model.image.embed_dim"),
    ("embed-dim-zero", ["model.image.embed_dim=0"], "model.image.embed_dim"),
    ("img-size-text", ["model.image.img_size=abc"], "model.image.img_size"),
    ("depths-scalar", ["model.image.depths=3"], "model.image.depths"),
    ("depths-negative", ["model.image.depths=[2,-1,1]"], "model.image.depths"),
    ("depths-shorter-than-heads", ["model.image.depths=[2,2]"], "model.image.num_heads"),
    ("heads-shorter-than-depths", ["model.image.num_heads=[4,4]"], "model.image.num_heads"),
    ("heads-longer-than-depths", ["model.image.num_heads=[4,4,4,4]"], "model.image.num_heads"),
    ("group-tokens-length", ["model.image.num_group_tokens=[32,8]"], "model.image.num_group_tokens"),
    ("group-tokens-zero-mid", ["model.image.num_group_tokens=[0,8,0]"], "model.image.num_group_tokens"),
    ("output-groups-missing", ["model.image.num_output_groups=[32]"], "model.image.num_output_groups"),
    ("patch-not-dividing", ["model.image.patch_size=5"], "model.image.patch_size"),
    ("patch-zero", ["model.image.patch_size=0"], "model.image.patch_size"),
    ("width-not-divisible-by-heads", ["model.image.num_heads=[3,3,3]"], "model.image.num_heads"),
    ("text-width-not-divisible", ["model.text.heads=3"], "model.text.heads"),
    ("text-unknown-key", ["+model.text.depth=2"], "model.text.depth"),
    ("context-length-zero", ["model.text.context_length=0"], "model.text.context_length"),
    ("stem-unknown", ["+model.image.stem=vit"], "model.image.stem"),
    ("conv-stem-patch", ["+model.image.stem=conv", "model.image.patch_size=1"], "model.image.patch_size"),
    ("drop-path-above-one", ["model.image.drop_path_rate=1.5"], "model.image.drop_path_rate"),
    ("qkv-bias-word", ["+model.image.qkv_bias=sometimes"], "model.image.qkv_bias"),
    ("model-embed-dim-zero", ["model.embed_dim=0"], "model.embed_dim"),
    ("pixel-std-zero", ["+model.pixel_std=[0,1,1]"], "model.pixel_std"),
    ("pixel-mean-two", ["+model.pixel_mean=[0.5,0.5]"], "model.pixel_mean"),
    ("model-image-scalar", ["model.image=5"], "model.image"),
    ("model-scalar", ["model=3"], "model"),
    ("crop-scale-text", ["data.crop_scale=abc"], "data.crop_scale"),
    ("crop-scale-above-one", ["data.crop_scale=[2,1]"], "data.crop_scale"),
    ("crop-scale-reversed", ["data.crop_scale=[0.9,0.5]"], "data.crop_scale"),
    ("crop-scale-zero", ["data.crop_scale=[0,1]"], "data.crop_scale"),
    ("crop-scale-one-number", ["data.crop_scale=[0.5]"], "data.crop_scale"),
    ("crop-ratio-reversed", ["+data.crop_ratio=[2,1]"], "data.crop_ratio"),
    ("image-size-negative", ["data.image_size=-8"], "data.image_size"),
    ("image-size-float", ["data.image_size=6.5"], "data.image_size"),
    ("data-typo", ["+data.crop_scal=[0.5,1]"], "did you mean data.crop_scale"),
    ("flip-word", ["data.flip=maybe"], "data.flip"),
    ("num-prompts-float", ["data.num_prompts=1.5"], "data.num_prompts"),
    ("num-prompts-zero-with-multi-label", ["data.num_prompts=0"], "data.num_prompts"),
    ("templates-unknown", ["data.templates=all"], "data.templates"),
    ("stop-nouns-string", ["+data.stop_nouns=photo"], "data.stop_nouns"),
    ("shuffle-buffer-negative", ["data.shuffle_buffer=-1"], "data.shuffle_buffer"),
    ("loss-typo", ["+loss.multi_label_wieght=1"], "did you mean loss.multi_label_weight"),
    ("loss-typo-override", ["loss.multi_label_wieght=1"], "did you mean loss.multi_label_weight"),
    ("loss-weight-negative", ["loss.multi_label_weight=-1"], "loss.multi_label_weight"),
    ("loss-form-unknown", ["loss.multi_label_form=hinge"], "loss.multi_label_form"),
    ("loss-positive-number", ["loss.same_text_positive=2"], "loss.same_text_positive"),
    ("loss-scalar", ["loss=1"], "loss"),
    ("optim-lr-negative", ["optim.lr=-1"], "optim.lr"),
    ("optim-lr-text", ["optim.lr=abc"], "optim.lr"),
    ("optim-typo", ["optim.lrr=1"], "optim.lrr"),
    ("optim-typo-added", ["+optim.lrr=1"], "did you mean optim.lr"),
    ("optim-name", ["optim.name=lamb"], "optim.name"),
    ("optim-betas-one", ["optim.betas=[0.9]"], "optim.betas"),
    ("optim-betas-above-one", ["optim.betas=[0.9,1.5]"], "optim.betas"),
    ("optim-momentum-one", ["optim.momentum=1"], "optim.momentum"),
    ("optim-clip-negative", ["optim.clip_grad=-1"], "optim.clip_grad"),
    ("optim-accum-zero", ["optim.accum_steps=0"], "optim.accum_steps"),
    ("optim-warmup-float", ["optim.warmup_steps=1.5"], "optim.warmup_steps"),
    ("optim-scalar", ["optim=3"], "optim"),
    ("train-steps-zero", ["train.steps=0"], "train.steps"),
    ("train-steps-text", ["train.steps=abc"], "train.steps"),
    ("train-steps-null", ["train.steps=null"], "train.steps"),
    ("train-batch-negative", ["train.batch_size=-1"], "train.batch_size"),
    ("train-precision", ["train.precision=fp8"], "train.precision"),
    ("train-device", ["train.device=tpu"], "train.device"),
    ("train-tensorboard-word", ["train.tensorboard=maybe"], "train.tensorboard"),
    ("train-workers-negative", ["train.num_workers=-1"], "train.num_workers"),
    ("train-save-every-negative", ["train.save_every=-5"], "train.save_every"),
    ("train-typo-added", ["+train.stpes=3"], "did you mean train.steps"),
    ("seed-negative", ["seed=-1"], "seed"),
    ("seed-text", ["seed=abc"], "seed"),
    ("section-typo-added", ["+trian.steps=3"], "unknown config section trian (did you mean train?)"),
    ("section-unknown-added", ["+evaluation.size=3"], "evaluation"),
    ("override-bad-yaml", ["optim.lr=[1,"], "optim.lr"),
    ("override-empty-key", ["=1"], "empty key"),
    ("override-not-a-section", ["+optim.lr.x=1"], "optim.lr"),
]

DENSESIAM_OVERRIDES = [
    ("mode-unknown", ["mode=finetune"], "mode"),
    ("mode-pretrain-with-segment-keys", ["mode=pretrain"], "loss.seg_weight: belongs to densesiam mode segment"),
    ("mode-pretrain-with-aux-head", ["mode=pretrain", "loss={}"], "model.aux_dim"),
    ("loss-typo", ["+loss.grid_sise=3"], "did you mean loss.grid_size"),
    ("loss-other-mode", ["+loss.grid_size=3"], "loss.grid_size"),
    ("region-start-above-one", ["loss.region_start=1.5"], "loss.region_start"),
    ("region-start-negative", ["loss.region_start=-2"], "loss.region_start"),
    ("seg-reweight-unknown", ["loss.seg_reweight=sometimes"], "loss.seg_reweight"),
    ("seg-weight-text", ["loss.seg_weight=lots"], "loss.seg_weight"),
    ("similarity-unknown", ["+loss.similarity=dot"], "loss.similarity"),
    ("aux-weight-without-head", ["model.aux_dim=0", "+loss.aux_weight=0.5"], "loss.aux_weight"),
    ("global-weight-without-branch", ["+loss.global_weight=1"], "loss.global_weight"),
    ("backbone-unknown", ["model.backbone=vgg"], "model.backbone"),
    ("dense-dim-one", ["model.dense_dim=1"], "model.dense_dim"),
    ("aux-dim-one", ["model.aux_dim=1"], "model.aux_dim"),
    ("model-unknown-key", ["+model.clusters=3"], "model.clusters"),
    ("fpn-word", ["model.fpn=maybe"], "model.fpn"),
    ("data-image-size-zero", ["data.image_size=0"], "data.image_size"),
    ("view-scale-reversed", ["data.view1.scale=[0.9,0.1]"], "data.view1"),
    ("view-unknown-key", ["+data.view1.sise=3"], "data.view1.sise"),
    ("view-size-text", ["data.view1.size=big"], "data.view1.size"),
    ("view2-flip-above-one", ["+data.view2.flip_p=2"], "data.view2"),
    ("data-unknown-key", ["+data.image_sise=3"], "did you mean data.image_size"),
]


def _train(config: Path, out: Path, *words: str, method: str = "groupvit") -> list[str]:
    return ["train", method, "--config", str(config), "--data", str(out.parent / "no_data"), "--out", str(out), *words]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad config files, a file where --out should be, and a GroupViT run folder with a checkpoint to resume."""
    root = tmp_path_factory.mktemp("bad_configs")
    made = {
        "trian.yaml": f"_base_: {GROUPVIT}\ntrian:\n  steps: 3\n",
        "modle.yaml": f"_base_: {GROUPVIT}\nmodle:\n  embed_dim: 3\n",
        "other_method.yaml": f"_base_: {GROUPVIT}\nmethod: densesiam\n",
        "no_method.yaml": "train: {steps: 3}\n",
        "broken.yaml": "model: {image: [1, 2\n",
        "list.yaml": "- 1\n- 2\n",
        "cycle_a.yaml": "_base_: cycle_b.yaml\n",
        "cycle_b.yaml": "_base_: cycle_a.yaml\n",
        "bad_base.yaml": "_base_: 3\n",
        "a_file": "not a folder\n",
    }
    for name, text in made.items():
        (root / name).write_text(text)
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\xff\xfe")
    run = root / "groupvit_run"
    config = load_config(GROUPVIT)
    check_method_config(resolve_engine_config(config), get_method("groupvit"))
    save_config(resolve_engine_config(config), run / CONFIG_NAME)
    progress = {"step": 1, "epoch": 0, "batches_in_epoch": 1, "skipped": 0, "elapsed_s": 0.0, "world_size": 1}
    torch.save({"format": STATE_FORMAT, **progress}, run / STATE_NAME)  # the refusal comes before its tensors
    return {**{name: root / name for name in made}, "photo.png": root / "photo.png", "run": run}


def _argv_cases():
    """(id, argv builder (files, out) -> argv, what the message must name)."""
    cases = [(f"groupvit-{i}", lambda f, o, w=w: _train(GROUPVIT, o, *w), k) for i, w, k in GROUPVIT_OVERRIDES]
    cases += [
        (f"densesiam-{i}", lambda f, o, w=w: _train(DENSESIAM, o, *w, method="densesiam"), k)
        for i, w, k in DENSESIAM_OVERRIDES
    ]
    cases += [
        ("file-section-typo", lambda f, o: _train(f["trian.yaml"], o), "unknown config section trian (did you mean"),
        ("file-section-typo-model", lambda f, o: _train(f["modle.yaml"], o), "modle (did you mean model?)"),
        ("file-other-method", lambda f, o: _train(f["other_method.yaml"], o), "method 'groupvit' does not match"),
        ("unknown-method", lambda f, o: _train(f["no_method.yaml"], o, method="nosuch"), "unknown method 'nosuch'"),
        ("config-missing", lambda f, o: _train(o.parent / "nowhere.yaml", o), "nowhere.yaml: config file not found"),
        ("config-broken-yaml", lambda f, o: _train(f["broken.yaml"], o), "broken.yaml: invalid YAML"),
        ("config-a-list", lambda f, o: _train(f["list.yaml"], o), "list.yaml: a config must be a mapping"),
        ("config-base-cycle", lambda f, o: _train(f["cycle_a.yaml"], o), "_base_ cycle"),
        ("config-bad-base", lambda f, o: _train(f["bad_base.yaml"], o), "_base_ must be a file name"),
        ("config-a-png", lambda f, o: _train(f["photo.png"], o), "photo.png: not a YAML config"),
        ("config-a-folder", lambda f, o: _train(o.parent, o), "cannot read config"),
        ("no-config", lambda f, o: ["train", "groupvit", "--out", str(o)], "--config is required"),
        ("resume-nothing", lambda f, o: ["train", "groupvit", "--out", str(o), "--resume"], "no config.yaml"),
        ("out-is-a-file", lambda f, o: _train(GROUPVIT, f["a_file"]), "a_file is a file"),
        (
            "resume-other-method",
            lambda f, o: _train(DENSESIAM, f["run"], "--resume", method="densesiam"),
            "method groupvit -> densesiam",
        ),
        (
            "resume-changed-model",
            lambda f, o: _train(GROUPVIT, f["run"], "--resume", "model.image.embed_dim=64", "model.embed_dim=64"),
            "model.embed_dim 128 -> 64, model.image.embed_dim 128 -> 64",
        ),
        (
            "resume-changed-model-no-config",
            lambda f, o: ["train", "groupvit", "--out", str(f["run"]), "--resume", "model.text.layers=1"],
            "model.text.layers 2 -> 1",
        ),
        (
            "demo-groupvit-crop-scale",
            lambda f, o: ["demo", "--out", str(o), "--method", "groupvit", "data.crop_scale=[2,1]"],
            "data.crop_scale",
        ),
        (
            "demo-densesiam-section-typo",
            lambda f, o: ["demo", "--out", str(o), "+densesiam.trian.steps=3"],
            "unknown config section trian (did you mean train?)",
        ),
    ]
    return cases


CASES = _argv_cases()


def test_the_sweep_has_at_least_74_cases() -> None:
    assert len(CASES) >= 74 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("build", "names"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_config_is_one_line_naming_the_key(build, names, files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    run_before = sorted((p.name, p.stat().st_mtime_ns) for p in files["run"].iterdir())
    code = main(build(files, out))
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annofree: error: "), err
    assert names in lines[0], lines[0]
    assert not out.exists()  # refused before anything was written
    assert sorted((p.name, p.stat().st_mtime_ns) for p in files["run"].iterdir()) == run_before


@pytest.mark.parametrize(
    "case_id", ["groupvit-embed-dim-text", "config-a-png", "resume-changed-model", "file-section-typo"]
)
def test_no_traceback_reaches_stderr_of_the_command(case_id, files, tmp_path) -> None:
    build, names = next(case[1:] for case in CASES if case[0] == case_id)
    done = subprocess.run(
        [sys.executable, "-m", "annofree", *build(files, tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert names in done.stderr


SHIPPED = sorted([*(REPO / "configs").glob("*/*.yaml"), *PACKAGED.glob("*/*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_passes_the_checks(path: Path) -> None:
    config = resolve_engine_config(load_config(path))
    check_method_config(config, get_method(config["method"]))


def test_the_engine_defaults_file_passes_the_checks() -> None:
    config = load_config(REPO / "configs" / "engine_defaults.yaml", ["method=groupvit", "train.steps=1"])
    check_method_config(resolve_engine_config(config), get_method("groupvit"))
    assert yaml.safe_load((PACKAGED / "engine_defaults.yaml").read_text()).keys() == config.keys()
