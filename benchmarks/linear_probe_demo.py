"""Linear probe of the DenseSiam demo's network on its texture scenes: trained against untrained (issue 23).

The demo (``annofree demo --method densesiam``, configs/densesiam/demo.yaml) trains on unlabelled 64 px texture
scenes and scores its clusters on 200 held-out scenes. Here the same held-out scenes score a linear probe
(:mod:`annofree.evaluation.linear_probe`, default settings) trained on the masks of the first ``--train-scenes``
of the demo's own training scenes (rendered again, with their masks, from the same seed): once on the trained
network's frozen features and once on the untrained network's (the weights training starts from). Features are
computed at the size the demo scores its clusters at (``demo.eval.short_side``, 128). The run's Hungarian
cluster figures are printed beside when its results.json is there.

Usage::

    annofree demo --method densesiam --out demo_out        # or any run directory of that recipe
    .venv/bin/python benchmarks/linear_probe_demo.py --run demo_out/densesiam [--train-scenes 500]
        [--scenes probe_scenes] [--networks trained,untrained] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import annofree
from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.data.synth import scene_rng
from annofree.data.synth_textures import TextureSceneConfig, render_texture_scene, write_texture_scenes
from annofree.demo.recipes import untrained_model
from annofree.engine.config import load_config
from annofree.evaluation.linear_probe import linear_probe_folders, model_features


def render_scenes(root: Path, demo: dict, train_scenes: int) -> tuple[Path, Path]:
    """The demo's held-out scenes and the first ``train_scenes`` of its training scenes with their masks."""
    cfg = TextureSceneConfig(size=demo["image_size"])
    val = root / "val"
    if not (val / "classes.txt").exists():
        write_texture_scenes(root, 0, demo["val_images"], cfg, demo["data_seed"], progress=False)
    train = root / f"train_labelled_{train_scenes}"
    if not (train / "classes.txt").exists():
        for index in range(train_scenes):
            scene = render_texture_scene(scene_rng(demo["data_seed"], "train", index), cfg)
            write_segmentation_sample(train, f"{index:09d}", scene.image, scene.label, image_format="png")
        write_classes(train, ["background", *cfg.classes])
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory of configs/densesiam/demo.yaml")
    parser.add_argument("--train-scenes", type=int, default=500)
    parser.add_argument("--scenes", default="probe_scenes", help="where the labelled scenes are rendered")
    parser.add_argument("--networks", default="trained,untrained", help="which of trained,untrained to probe")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    run = Path(args.run)
    config = load_config(run / "config.yaml", defaults=None)
    demo = config["demo"]
    short_side = (demo.get("eval") or {}).get("short_side")
    train, val = render_scenes(Path(args.scenes), demo, args.train_scenes)
    build = {"trained": lambda: annofree.load(run).eval(), "untrained": lambda: untrained_model(config).eval()}
    networks = {name: build[name]() for name in args.networks.split(",")}
    figures = {"train_scenes": args.train_scenes, "val_scenes": demo["val_images"], "short_side": short_side}
    for name, model in networks.items():
        started = time.perf_counter()
        scores = linear_probe_folders(model_features(model, short_side), train, val)
        figures[name] = {
            "miou": scores["miou"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "per_class_iou": scores["per_class_iou"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        per_class = ", ".join(f"{c} {v:.3f}" for c, v in scores["per_class_iou"].items())
        print(f"linear probe, {name} network: mIoU {scores['miou']:.3f} ({per_class})")
    results = run / "results.json"
    if results.exists():
        clusters = json.loads(results.read_text())
        figures["clusters_hungarian"] = {k: clusters.get(k) for k in ("miou", "per_class_iou")}
        print(f"clusters (Hungarian), trained network: mIoU {clusters.get('miou'):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
