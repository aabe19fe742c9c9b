"""Diagnose a GroupViT checkpoint on a segmentation folder (docs/learning.md uses these figures).

Prints, for the held-out images:
* image-level AUC of "a photo of a {class}." per class (does the model recognise the classes at all?);
* eval-mode grouping per stage: how many groups the argmax uses per image and the mean largest soft
  assignment (one or two groups per image = group collapse, and zero-shot segmentation cannot work);
* grouping or naming: the mIoU if every final group took the true label covering most of it (an upper
  bound set by the grouping alone), how often a group covering mostly one object class is named that class,
  and the best class similarity of object groups against background groups (equal = background cannot be
  told from objects by the background threshold);
* zero-shot mIoU with the demo's settings (background where no class of the top 5 has cosine similarity 0.2,
  whole scenes enlarged to 72 px, averaged with their mirror image), and with ``--bg-sweep`` at several
  thresholds of the chosen rule (choose one on scenes of a seed other than the held-out ones, as
  docs/learning.md does for the demo).

    python benchmarks/probe_groupvit.py RUN_OR_WEIGHTS VAL_FOLDER [--images 300] [--bg-rule similarity]
        [--bg-thresh 0.2] [--short-side 72] [--no-flip] [--bg-sweep]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.stats import rankdata

from annofree.data.folder import SegmentationFolder
from annofree.data.images import to_pixel_batch
from annofree.evaluation.folder import evaluate_folder
from annofree.evaluation.groups import majority_labels, segment_names
from annofree.evaluation.metrics import ConfusionMatrix
from annofree.inference.zero_shot import class_embeddings, group_maps
from annofree.pretrained import load


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC; NaN when a class is always or never present."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def grouping_stats(assignments: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per stage ([B, G, N] soft assignments): groups used by the argmax per image, largest soft weight."""
    stats = []
    for soft in assignments:
        hard = torch.nn.functional.one_hot(soft.argmax(1), soft.shape[1])  # [B, N, G]
        used = (hard.sum(1) > 0).sum(1).float().mean().item()
        stats.append(
            {
                "groups": soft.shape[1],
                "groups_used": round(used, 2),
                "max_soft": round(soft.max(1).values.mean().item(), 3),
            }
        )
    return stats


def grouping_or_naming(model, batches: list[torch.Tensor], labels: list[np.ndarray], text: torch.Tensor) -> dict:
    """Oracle-named mIoU of the final groups, naming accuracy of object groups, object vs background similarity."""
    confusion, names = ConfusionMatrix(text.shape[0] + 1), []
    labels = iter(labels)
    for pixels in batches:
        out = model.encode_groups(pixels)
        maps = group_maps(out.grouping, out.grid, tuple(pixels.shape[-2:])).numpy()
        scores = (out.group_embeds @ text.T).numpy()
        for segments, group_scores in zip(maps, scores, strict=True):
            label = next(labels)
            confusion.update(majority_labels(segments, label), label)
            names += segment_names(segments, label, group_scores)
    objects = [(truth == named, score) for truth, named, score in names if truth]
    background = [score for truth, _, score in names if not truth]
    return {
        "oracle_named_miou": round(confusion.miou(), 3),
        "object_groups_named_right": round(float(np.mean([hit for hit, _ in objects])), 3) if objects else None,
        "best_class_similarity": {
            "object_groups": round(float(np.mean([score for _, score in objects])), 3) if objects else None,
            "background_groups": round(float(np.mean(background)), 3) if background else None,
        },
    }


SWEEPS = {"affinity": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95), "similarity": (0.1, 0.15, 0.18, 0.2, 0.22, 0.25, 0.3)}


def probe(
    weights: str,
    root: str,
    images: int,
    bg_thresh: float,
    sweep: bool = False,
    bg_rule: str = "similarity",
    short_side: int | None = 72,
    flip: bool = True,
) -> dict:
    model = load(weights).eval()
    folder = SegmentationFolder(root)
    classes = folder.classes[1:]
    pixels, present, labels = [], [], []
    for index, (_, image, label) in enumerate(folder):
        if index >= images:
            break
        pixels.append(image)
        labels.append(label)
        present.append([(label == c + 1).any() for c in range(len(classes))])
    present = np.array(present)
    text = class_embeddings(model, classes, "a photo of a {}.")
    with torch.no_grad():
        batches = [model.normalize_pixels(to_pixel_batch(pixels[i : i + 64])) for i in range(0, len(pixels), 64)]
        sims = torch.cat([model.encode_image(b) for b in batches]) @ text.T
        stages = grouping_stats(model.encode_groups(batches[0]).soft_assignments)
        diagnosis = grouping_or_naming(model, batches, labels, text)
    aucs = {name: round(auc(sims[:, j].numpy(), present[:, j]), 3) for j, name in enumerate(classes)}

    def score(thresh: float) -> dict:
        return evaluate_folder(
            model, root, short_side=short_side, mode="whole", bg_thresh=thresh, bg_rule=bg_rule, topk=5,
            flip=flip, limit=images, progress=False,
        )  # fmt: skip

    grid = SWEEPS[bg_rule]
    results = {t: score(t) for t in sorted({bg_thresh, *grid} if sweep else {bg_thresh})}  # one pass each
    scores = results[bg_thresh]
    by_thresh = {str(t): round(results[t]["miou"], 3) for t in grid} if sweep else {}
    return {
        "class_auc_mean": round(float(np.nanmean(list(aucs.values()))), 3),
        "class_auc": aucs,
        "grouping": stages,
        **diagnosis,
        "miou": round(scores["miou"], 3),
        "per_class_iou": scores["per_class_iou"],
        **({"miou_by_bg_thresh": by_thresh} if sweep else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("folder")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--bg-rule", choices=list(SWEEPS), default="similarity")
    parser.add_argument("--bg-thresh", type=float, default=0.2)
    parser.add_argument("--short-side", type=int, default=72, help="0: score the scenes at their own size")
    parser.add_argument("--no-flip", action="store_true", help="one pass, without the mirrored image")
    parser.add_argument("--bg-sweep", action="store_true", help="zero-shot mIoU at several thresholds of the rule too")
    args = parser.parse_args()
    result = probe(
        args.weights, args.folder, args.images, args.bg_thresh, args.bg_sweep, args.bg_rule, args.short_side or None,
        not args.no_flip,
    )  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
