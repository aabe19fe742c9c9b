"""DenseSiam's part of ``annofree demo``: unsupervised segmentation learned from unlabelled images alone.

1. Render texture scenes (:mod:`annofree.data.synth_textures`): object classes are told apart by texture
   and shape, while colours and brightness are drawn afresh for every object and background. Training
   sees a folder of unlabelled images; the held-out scenes' masks are used for scoring only.
2. Two baselines on the held-out scenes, scored exactly like the model (one set of clusters for the whole
   set, Hungarian-matched to the classes): k-means on raw pixel colours, and k-means on the dense features
   of the same network at random initialisation (the weights training starts from), the latter at the
   size the model is scored at (``demo.eval.short_side``) and at the scenes' own size.
3. Train DenseSiam (segmentation mode) with the training engine, as ``annofree train densesiam`` does.
4. Score its clusters the same way, the scenes resized to ``demo.eval.short_side``; write
   ``OUT/densesiam/results.json``, the weights (``OUT/densesiam`` is a run directory that ``annofree
   segment`` and ``annofree evaluate`` accept) and overlays.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from annofree.data.folder import SegmentationFolder
from annofree.data.synth_textures import TextureSceneConfig, write_texture_scenes
from annofree.demo.recipes import render_once, run_size, train_fresh, untrained_model
from annofree.errors import UserError
from annofree.evaluation.clusters import evaluate_cluster_samples, read_groups
from annofree.evaluation.hungarian import remap_predictions
from annofree.evaluation.kmeans import kmeans_baseline, network_features, pixel_colours
from annofree.inference.clusters import ClusterSegmenter
from annofree.inference.pixels import resize_short_side
from annofree.io import atomic_write
from annofree.viz import side_by_side

OVERLAYS = 6
SCORES = ("miou", "pixel_accuracy", "per_class_iou", "groups")


def prepare_texture_scenes(out: Path, demo: dict[str, Any], progress: bool) -> tuple[Path, Path]:
    """Render the scenes once (reused when the settings match): ``(train image folder, val folder)``."""
    settings = {key: demo[key] for key in ("train_images", "val_images", "image_size", "data_seed")}

    def render() -> dict[str, Any]:
        cfg = TextureSceneConfig(size=demo["image_size"])
        write_texture_scenes(out, demo["train_images"], demo["val_images"], cfg, demo["data_seed"], progress=progress)
        return {}

    render_once(out, settings, render)
    return out / "train", out / "val"


def eval_short_side(demo: dict[str, Any]) -> int | None:
    """``demo.eval.short_side``: the size the held-out scenes are scored at (None: their own size)."""
    side = (demo.get("eval") or {}).get("short_side")
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1):
        raise UserError(f"demo.eval.short_side must be a positive integer or null, got {side!r}")
    return side


def baselines(
    config: dict[str, Any], samples: list, classes: list[str], groups: dict, short_side: int | None = None
) -> dict[str, dict]:
    """k-means (as many clusters as classes) on raw pixel colours and on the untrained network's features,
    the latter computed at the resolution the trained model is scored at (``short_side``)."""
    k = len(classes)
    kw = {"groups": groups, "progress": False}
    untrained = untrained_model(config).eval()

    def dense_features(pixels: torch.Tensor) -> torch.Tensor:
        return untrained.dense_features(pixels if short_side is None else resize_short_side(pixels, short_side))

    scores = {
        "kmeans_pixels": kmeans_baseline(pixel_colours, samples, classes, k, **kw),
        "random_init": kmeans_baseline(network_features(dense_features), samples, classes, k, **kw),
    }
    if short_side is not None:  # also at the scenes' own size, in case the untrained features do better there
        scores["random_init_native"] = kmeans_baseline(
            network_features(untrained.dense_features), samples, classes, k, **kw
        )
    return scores


def write_overlays(segmenter: ClusterSegmenter, samples: list, classes: list[str], mapping: list[int], out: Path):
    """``scene_NAME.png``: image | clusters named by their matched class | ground truth."""
    for name, image, label in samples[:OVERLAYS]:
        named = remap_predictions(segmenter.segment(image).label_map, mapping)
        side_by_side(image, named, classes, label).save(out / f"scene_{name}.png")


def run_densesiam_demo(out: str | Path, config: dict[str, Any], progress: bool = True, log=print) -> dict[str, Any]:
    """Render, score the baselines, train, score the clusters; returns (and writes) the results."""
    out, started = Path(out), time.perf_counter()
    demo = config.get("demo") or {}
    missing = {"train_images", "val_images", "image_size", "data_seed"} - set(demo)
    if missing:
        raise UserError(f"the DenseSiam demo config lacks demo.{', demo.'.join(sorted(missing))}")
    log(f"[1/4] rendering {demo['train_images']} unlabelled texture scenes, {demo['val_images']} held-out")
    train_dir, val_dir = prepare_texture_scenes(out / "data_textures", demo, progress)
    dataset = SegmentationFolder(val_dir)
    classes = [str(c) for c in dataset.classes]
    groups = read_groups(val_dir, classes)
    samples = [dataset[i] for i in range(len(dataset))]

    short_side = eval_short_side(demo)
    log("[2/4] baselines: k-means on pixel colours and on the untrained network's features")
    base = baselines(config, samples, classes, groups, short_side)
    log(f"      mIoU: pixel colours {base['kmeans_pixels']['miou']:.3f}, "
        f"untrained features {base['random_init']['miou']:.3f}")  # fmt: skip

    run_dir = out / "densesiam"
    log(f"[3/4] training DenseSiam from scratch on the unlabelled images: {run_size(config)}")
    result, facts = train_fresh(config, run_dir, str(train_dir))
    model = result.method.deployable().cpu().eval()
    segmenter = ClusterSegmenter(model, short_side)
    score = evaluate_cluster_samples(
        segmenter.cluster_maps, samples, classes, segmenter.num_clusters, groups=groups, progress=False
    )
    write_overlays(segmenter, samples, classes, score["mapping"], run_dir)
    log(f"[4/4] Hungarian mIoU {score['miou']:.3f}; overlays of held-out scenes in {run_dir}")
    results = {
        **{key: score[key] for key in SCORES},
        "miou_kmeans_pixels": base["kmeans_pixels"]["miou"],
        "miou_random_init": base["random_init"]["miou"],
        "pixel_accuracy_kmeans_pixels": base["kmeans_pixels"]["pixel_accuracy"],
        "pixel_accuracy_random_init": base["random_init"]["pixel_accuracy"],
        **({"miou_random_init_native": base["random_init_native"]["miou"]} if "random_init_native" in base else {}),
        **facts,
        "val_images": len(samples),
        "num_clusters": segmenter.num_clusters,
        "eval_short_side": short_side,
        "matching": score["matching"],
        "mapping": score["mapping"],
        "weights": str(run_dir / "model.safetensors"),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write(run_dir / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2) + "\n"))
    return results
