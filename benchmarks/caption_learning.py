"""How fast does an image encoder learn the scene classes from captions? (docs/learning.md, "where the signal is lost")

A research benchmark, not part of the toolkit. It trains in memory on pre-rendered synthetic scenes, one link of
the chain at a time, and every ``--probe-every`` steps prints the mean class AUC of "a photo of a {class}." on
held-out scenes (and, for GroupViT, the zero-shot mIoU and the eval-mode groups used per stage):

    python benchmarks/caption_learning.py --encoder cnn-max --multi-label sigmoid --prompts 8     # CLIP with a CNN
    python benchmarks/caption_learning.py --encoder groupvit --stem cnn --stem-loss 1 \\
        --multi-label sigmoid --prompts 8 model.image.depths=[1,1,1]                           # GroupViT, CNN stem

Samples go through the package's own ``make_sample`` (crop, flip, nouns, templates, tokenizer) and losses.
``--stem cnn`` is the package's ``model.image.stem: cnn`` (the patch projection plus a 7-layer CNN at patch 4);
``--stem-loss`` is ``loss.patch_token_weight`` (in the ``--multi-label`` form); the losses are the training
method's own. ``--captions names`` replaces each caption by the names of the classes present (a ceiling, not
text supervision); ``--stop-nouns`` drops the nouns of ``synth_local.yaml``'s ``data.stop_nouns``. The layout
of ``synth_local.yaml`` (docs/learning.md, "the groups cannot be named"):

    python benchmarks/caption_learning.py --stem cnn --soft --multi-label sigmoid --prompts 8 --stem-loss 1 \
        model.image.depths=[0,0] model.image.num_heads=[4,4] model.image.num_group_tokens=[8,0] \
        model.image.num_output_groups=[8] +model.image.group_residual=false
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np
import torch
from probe_groupvit import auc, grouping_or_naming, grouping_stats
from torch import nn

import annofree.models.image_encoder as image_encoder
from annofree.data.synth import SHAPE_CLASSES, SceneConfig, render_scene, scene_rng
from annofree.engine.config import apply_overrides, load_config
from annofree.evaluation.metrics import ConfusionMatrix
from annofree.inference.zero_shot import ZeroShotSegmenter
from annofree.methods.groupvit import GroupViTMethod, collate, make_sample


class PooledCNN(nn.Module):
    """The CNN with a global pool in place of GroupViT's stages: one "group" per image, so no segmentation."""

    def __init__(self, dim: int, pool: str):
        super().__init__()
        self.stem, self.pool, self.norm = image_encoder.CNNStem(4, 3, dim, 1e-5), pool, nn.LayerNorm(dim)

    def forward(self, pixels: torch.Tensor) -> image_encoder.ImageEncoderOutput:
        tokens, grid = self.stem(pixels)
        pooled = tokens.amax(1) if self.pool == "max" else tokens.mean(1)
        return image_encoder.ImageEncoderOutput(self.norm(pooled)[:, None], [], grid, patch_tokens=tokens)


def render(seed: int, split: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    scenes = [render_scene(scene_rng(seed, split, i), SceneConfig()) for i in range(count)]
    images = np.stack([s.image for s in scenes])
    labels = np.stack([s.label for s in scenes])
    present = np.stack([[(s.label == c + 1).any() for c in range(len(SHAPE_CLASSES))] for s in scenes])
    return images, labels, present, [s.caption for s in scenes]


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        config = load_config("configs/groupvit/synth_tiny.yaml")
        config = apply_overrides(config, [f"data.num_prompts={args.prompts}", "loss.same_text_positive=true"])
        form, weight = args.multi_label, args.stem_loss
        config = apply_overrides(config, [f"loss.multi_label_form={form}", f"+loss.patch_token_weight={weight}"])
        if args.stop_nouns:  # the list of synth_local.yaml
            words = load_config("configs/groupvit/synth_local.yaml")["data"]["stop_nouns"]
            config = apply_overrides(config, [f"+data.stop_nouns=[{','.join(words)}]"])
        if args.stem == "cnn":
            config = apply_overrides(config, ["+model.image.stem=cnn"])
        config = apply_overrides(config, [*args.overrides, f"+model.image.hard_assignment={not args.soft}"])
        self.method = GroupViTMethod(config)
        self.model = self.method.model
        if args.encoder != "groupvit":
            self.model.img_encoder = PooledCNN(self.model.img_encoder.width, args.encoder.split("-")[1])
        params = list(self.method.parameters())
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.05},
             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], args.lr)  # fmt: skip

    def lr_at(self, step: int) -> float:
        args = self.args
        cosine = 0.5 * (1 + math.cos(math.pi * step / args.steps))
        return args.lr * min(1.0, (step + 1) / args.warmup) * (0.01 + 0.99 * cosine)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training method's own losses (image-text, multi-label, patch tokens), summed as the engine does."""
        out = self.method({**batch, "skipped": torch.tensor(0)})
        return sum(value for name, value in out.items() if name.startswith("loss"))


def probe(model, images, labels, present, groupvit: bool) -> dict:
    model.eval()
    with torch.no_grad():
        segmenter = ZeroShotSegmenter(model, list(SHAPE_CLASSES), bg_thresh=0.9, topk=5, short_side=None)
        pixels = model.normalize_pixels(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
        sims = (model.encode_image(pixels) @ segmenter.text_embeds.T).numpy()
        result = {"auc": round(float(np.mean([auc(sims[:, j], present[:, j]) for j in range(sims.shape[1])])), 3)}
        if groupvit:
            confusion = ConfusionMatrix(len(SHAPE_CLASSES) + 1)
            for one, truth in zip(segmenter.segment_batch(list(images)), labels, strict=True):
                confusion.update(one.label_map, truth)
            stages = grouping_stats(model.encode_groups(pixels[:64]).soft_assignments)
            result.update(miou=round(confusion.miou(), 3), groups_used=[s["groups_used"] for s in stages])
            result.update(grouping_or_naming(model, [pixels], list(labels), segmenter.text_embeds))
    model.train()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=["groupvit", "cnn-max", "cnn-mean"], default="groupvit")
    parser.add_argument("--stem", choices=["patch", "cnn"], default="patch")
    parser.add_argument("--soft", action="store_true", help="soft assignment instead of hard + Gumbel")
    parser.add_argument("--multi-label", choices=["softmax", "sigmoid"], default="softmax")
    parser.add_argument("--prompts", type=int, default=3, help="noun prompts per caption (K)")
    parser.add_argument(
        "--stem-loss",
        type=float,
        default=0.0,
        help="loss.patch_token_weight: the multi-label loss on max-pooled stem tokens",
    )
    parser.add_argument("--captions", choices=["real", "names"], default="real")
    parser.add_argument("--stop-nouns", action="store_true")
    parser.add_argument("--train", type=int, default=100_000, help="scenes rendered for training (data seed 1)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--probe-every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides of synth_tiny.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    images, _, present, captions = render(1, "train", args.train)
    if args.captions == "names":
        captions = [" and ".join(f"a {SHAPE_CLASSES[c]}" for c in np.flatnonzero(row)) for row in present]
    val = render(1, "val", 300)
    trainer = Trainer(args)
    start = time.time()
    for step in range(args.steps):
        for group in trainer.optimizer.param_groups:
            group["lr"] = trainer.lr_at(step)
        picks = [rng.randrange(len(images)) for _ in range(64)]
        options = trainer.method.sample_options
        batch = collate([make_sample(options, "", images[i], captions[i], rng) for i in picks])
        loss = trainer.loss(batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(trainer.method.parameters(), 5.0)
        trainer.optimizer.step()
        if (step + 1) % args.probe_every == 0 or step + 1 == args.steps:
            result = probe(trainer.model, val[0], val[1], val[2], args.encoder == "groupvit")
            print({"step": step + 1, "loss": round(loss.item(), 3), **result, "s": round(time.time() - start)})


if __name__ == "__main__":
    main()
