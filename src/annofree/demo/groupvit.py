"""GroupViT's part of ``annofree demo``: segmentation that emerges from captions alone, on a laptop CPU.

1. Render synthetic captioned scenes: training shards hold images and captions only; the held-out split
   has masks, used for scoring and nothing else.
2. Score the untrained model (same seed, same initial weights) by zero-shot segmentation of the held-out
   scenes from the class names: the baseline that training must beat.
3. Train GroupViT with the training engine (the same code path as ``annofree train``): from scratch, or
   from the checkpoint that the recipe names in ``train.init_weights`` (itself trained from scratch on
   captions by ``configs/groupvit/demo_pretrain.yaml``; see docs/learning.md for why).
4. Score it again and write ``OUT/groupvit/results.json``, the weights (``OUT/groupvit`` is a run directory
   that ``annofree segment --weights`` accepts), the segmenter settings they were scored with
   (``inference.json``, marked as trained on synthetic scenes: ``segment``, ``evaluate --data``, the app and
   ``annofree.load`` use them) and overlays of a few held-out scenes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from annofree.data.folder import SegmentationFolder
from annofree.data.synth import SceneConfig, write_scenes
from annofree.demo.recipes import render_once, run_size, train_fresh, untrained_model
from annofree.engine.config import merge
from annofree.errors import UserError
from annofree.evaluation.folder import evaluate_folder
from annofree.evaluation.protocols import zero_shot_protocol
from annofree.inference.settings import ZeroShotSettings
from annofree.inference.zero_shot import ZeroShotSegmenter
from annofree.io import atomic_write
from annofree.viz import side_by_side
from annofree.weights import load as annofree_load
from annofree.weights import write_stored_settings

OVERLAYS = 6
EVAL_KEYS = set(ZeroShotSettings.field_names())  # what demo.eval may set


def prepare_scenes(out: Path, demo: dict[str, Any], progress: bool) -> tuple[str, Path]:
    """Render the scenes once; reuse them when the same settings were rendered before (a re-run is cheap)."""
    settings = {key: demo[key] for key in ("train_images", "val_images", "image_size", "data_seed")}

    def render() -> dict[str, Any]:
        summary = write_scenes(
            out,
            demo["train_images"],
            demo["val_images"],
            SceneConfig(size=demo["image_size"]),
            seed=demo["data_seed"],
            progress=progress,
        )
        return {"pattern": summary.train_pattern}

    return render_once(out, settings, render)["pattern"], out / "val"


def eval_settings(demo: dict[str, Any]) -> dict[str, Any]:
    """The zero-shot segmenter's settings: ``demo.eval`` over whole scenes at their own size
    (``demo.image_size``); a one-line error for a key the segmenter does not take."""
    given = demo["eval"] or {}
    unknown = sorted(set(given) - EVAL_KEYS)
    if unknown:
        raise UserError(f"unknown demo.eval.{unknown[0]} (known: {', '.join(sorted(EVAL_KEYS))})")
    settings = {"short_side": demo["image_size"], "mode": "whole", **given}
    try:
        ZeroShotSettings.from_dict(settings)  # a bad value stops the demo before rendering and training
    except UserError as exc:
        raise UserError(f"demo.eval: {exc}") from None
    return settings


def zero_shot_score(model: torch.nn.Module, val_dir: Path, evaluation: dict[str, Any], progress: bool) -> dict:
    return evaluate_folder(model.eval(), val_dir, progress=progress, **evaluation)


def write_overlays(model: torch.nn.Module, val_dir: Path, out: Path, evaluation: dict[str, Any], count: int) -> None:
    """``scene_NAME.png``: image | prediction | ground truth, each with its legend, for the first scenes."""
    dataset = SegmentationFolder(val_dir)
    classes = [str(c) for c in dataset.classes]
    segmenter = ZeroShotSegmenter(model.eval(), classes[1:], **evaluation)
    for index in range(min(count, len(dataset))):
        name, image, label = dataset[index]
        predicted = segmenter.segment(image).label_map
        side_by_side(image, predicted, classes, label).save(out / f"scene_{name}.png")


def run_groupvit_demo(out: str | Path, config: dict[str, Any], progress: bool = True, log=print) -> dict[str, Any]:
    """Render, score at initialisation, train, score again; returns (and writes) the results.

    When the recipe starts from a checkpoint (``train.init_weights``), a short from-scratch run
    (``demo.scratch``: config sections merged over the recipe) comes first, so that the user sees training
    from nothing move the loss, and its score is reported beside the others.
    """
    out = Path(out)
    demo = config.get("demo") or {}
    missing = {"train_images", "val_images", "image_size", "data_seed", "eval"} - set(demo)
    if missing:
        raise UserError(f"the demo config lacks demo.{', demo.'.join(sorted(missing))}")
    evaluation = eval_settings(demo)
    init_weights = config["train"].get("init_weights")
    phases = 5 if init_weights else 4
    started = time.perf_counter()
    log(f"[1/{phases}] rendering {demo['train_images']} captioned training scenes, {demo['val_images']} held-out")
    pattern, val_dir = prepare_scenes(out / "data", demo, progress)
    render_seconds = time.perf_counter() - started

    log(f"[2/{phases}] zero-shot segmentation of the held-out scenes by the untrained model")
    before = zero_shot_score(untrained_model(config), val_dir, evaluation, progress)
    log(f"      mIoU at random initialisation: {before['miou']:.3f}")
    results: dict[str, Any] = {}
    if init_weights:
        scratch_config = merge(config, demo.get("scratch") or {})
        scratch_config["train"] = {**scratch_config["train"], "init_weights": None}  # from nothing
        log(f"[3/{phases}] a short run from scratch: {run_size(scratch_config)} (the loss moves; shapes take longer)")
        scratch = _train_and_score(scratch_config, out / "groupvit_scratch", pattern, val_dir, evaluation, progress)
        log(f"      loss {scratch['loss_first']:.2f} -> {scratch['loss_last']:.2f}, mIoU {scratch['miou']:.3f}")
        start = zero_shot_score(annofree_load(init_weights), val_dir, evaluation, progress)
        log(f"      the recipe's checkpoint {init_weights} (trained from scratch, make reproduce-demo): "
            f"mIoU {start['miou']:.3f}")  # fmt: skip
        results.update(scratch_run=scratch, init_weights=init_weights, miou_init_weights=start["miou"])

    run_dir = out / "groupvit"
    log(f"[{phases - 1}/{phases}] training GroupViT {'on from the checkpoint' if init_weights else 'from scratch'} "
        f"on captions only: {run_size(config)}")  # fmt: skip
    final = _train_and_score(config, run_dir, pattern, val_dir, evaluation, progress)
    log(f"[{phases}/{phases}] mIoU {final['miou']:.3f}; overlays of held-out scenes in {run_dir}")
    model = annofree_load(run_dir)
    write_overlays(model, val_dir, run_dir, evaluation, OVERLAYS)
    results = {
        "miou": final["miou"],
        "miou_random_init": before["miou"],
        "pixel_accuracy": final["pixel_accuracy"],
        "pixel_accuracy_random_init": before["pixel_accuracy"],
        "per_class_iou": final["per_class_iou"],
        "train_seconds": final["train_seconds"],
        "train_images": final["train_images"],
        "train_steps": final["train_steps"],
        "loss_first": final["loss_first"],
        "loss_last": final["loss_last"],
        "render_seconds": round(render_seconds, 1),
        "val_images": final["num_images"],
        "evaluation": {**evaluation, "classes": list(final["per_class_iou"])},
        "weights": str(run_dir / "model.safetensors"),
        "init_weights": None,
        "miou_init_weights": None,
        **results,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write(run_dir / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2) + "\n"))
    return results


def _train_and_score(
    config: dict[str, Any], run_dir: Path, pattern: str, val_dir: Path, evaluation: dict[str, Any], progress: bool
) -> dict[str, Any]:
    """Train into ``run_dir`` (replacing the demo's previous result there), then score zero-shot segmentation;
    the settings it is scored with are stored beside the weights (trained on synthetic scenes)."""
    result, facts = train_fresh(config, run_dir, pattern)
    score = zero_shot_score(result.method.deployable().cpu(), val_dir, evaluation, progress)
    scored_with = ZeroShotSettings.from_dict(evaluation, base=zero_shot_protocol("folder").settings)  # as scored
    write_stored_settings(run_dir, scored_with, synthetic=True)
    return {**{key: score[key] for key in ("miou", "pixel_accuracy", "per_class_iou", "num_images")}, **facts}
