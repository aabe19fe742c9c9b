"""Evaluation throughput: images per second of ``annofree evaluate`` on a VOC-layout fixture.

Writes N random 500x375 images with labels in the PASCAL VOC 2012 layout (the size of most VOC images), then
runs the zero-shot evaluator with the VOC protocol (short side 448, sliding windows 448 / stride 224, the
VOC background threshold) and prints images per second, once with one window per forward pass and once
with the windows batched (``--windows-per-batch``). The model is the paper's gcc_yfcc GroupViT (random
weights unless ``--weights``): the speed does not depend on the values of the weights.

    python benchmarks/eval_throughput.py [--images 16] [--weights W] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_voc_fixture(root: Path, count: int, seed: int = 0) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"2007_{i:06d}" for i in range(count)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        label = rng.integers(0, 21, (375, 500), dtype=np.uint8)
        label[:4] = 255  # VOC's void border
        Image.fromarray(label, mode="L").save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def images_per_second(model, dataset, protocol, windows_per_batch: int) -> float:
    from annofree.evaluation.folder import evaluate_dataset

    evaluate_dataset(model, dataset, protocol, limit=1, progress=False, windows_per_batch=windows_per_batch)  # warm-up
    start = time.perf_counter()
    evaluate_dataset(model, dataset, protocol, progress=False, windows_per_batch=windows_per_batch)
    return len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--weights", default=None, help="GroupViT weights (default: random gcc_yfcc)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--windows-per-batch", type=int, default=8)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from annofree.data.benchmarks.registry import open_dataset
    from annofree.evaluation.protocols import zero_shot_protocol
    from annofree.models import GroupViT, GroupViTConfig
    from annofree.pretrained import load

    model = load(args.weights) if args.weights else GroupViT(GroupViTConfig())
    model = model.to(args.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = open_dataset("voc", write_voc_fixture(Path(tmp), args.images))
        protocol = zero_shot_protocol("voc")
        one = images_per_second(model, dataset, protocol, 1)
        batched = images_per_second(model, dataset, protocol, args.windows_per_batch)
    print(f"device {args.device}, threads {torch.get_num_threads()}, {args.images} VOC-size images (500x375)")
    print(f"one window per forward pass: {one:.2f} images/s")
    print(f"{args.windows_per_batch} windows per forward pass: {batched:.2f} images/s ({batched / one:.2f}x)")


if __name__ == "__main__":
    main()
