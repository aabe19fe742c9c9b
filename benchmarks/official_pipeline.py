"""How far annofree's zero-shot pipeline is from the official GroupViT evaluation's, before and after issue 18.

Runs on CPU in about a minute, on a seeded random-weights GroupViT (a small config with the official patch size
16 and the official 64 -> 8 groups) and scikit-image's example photos; OpenCV (the dev extra) is the reference
for the resize. Prints (the figures are in docs/official-pipeline.md):

1. prompt ensembles: the largest difference of class embeddings (20 VOC names; the 7- and 80-template sets)
   from the official law (the mean of the un-normalised projected prompt embeddings, then normalised), for
   annofree's former law (each prompt normalised first) and for ``class_embeddings`` now;
2. resize: label-map agreement with an OpenCV-based reference (the uint8 image resized by ``cv2.resize`` to
   mmcv's size, then segmented at that size) of annofree's own resize (float bilinear, antialiased when
   shrinking: the former default) and of ``resize="official"``; whole images upscaled and downscaled, and a
   VOC-sized image (375 x 500) in sliding mode;
3. sides that are not a multiple of the patch (whole mode, 448 x 600): agreement with the official rule (the
   patch convolution drops the right 8 columns, the grouping maps are stretched over the image; written out
   here) of annofree's former rule (resize to the nearest multiple) and of ``patch_remainder="drop"``.

Label maps are compared without background (every pixel takes its best class), since a random model's affinities
would make nearly every pixel background. A random model puts nearly all pixels of an image in one or two of its
8 final groups, so its label maps hold one or two classes and say little; the first grouping stage's map (each
pixel's most likely of the 64 groups, resized to the input as the final maps are) is printed beside them as the
sensitive measure. Usage::

    .venv/bin/python benchmarks/official_pipeline.py [--threads 2]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as photos

from annofree.data.benchmarks.voc import VOC_CLASSES
from annofree.data.captions import TEMPLATE_SETS
from annofree.data.tokenizer import tokenize
from annofree.evaluation.protocols import zero_shot_protocol
from annofree.inference.pixels import PATCH_RULES, resize_short_side, to_pixel_batch
from annofree.inference.resize import rescaled_size
from annofree.inference.zero_shot import (
    ZeroShotSegmenter,
    class_embeddings,
    group_class_affinity,
    group_maps,
    pixel_logits,
)
from annofree.models import GroupViT, GroupViTConfig, ImageEncoderConfig, TextEncoderConfig

VOC = zero_shot_protocol("voc")
NAMES = VOC.queries(VOC_CLASSES[1:])


def random_model(seed: int = 0) -> GroupViT:
    config = GroupViTConfig(
        image=ImageEncoderConfig(embed_dim=192, depths=(2, 1, 1), num_heads=(3, 3, 3)),  # patch 16, groups 64 -> 8
        text=TextEncoderConfig(width=128, layers=4, heads=4),
        embed_dim=128,
        proj_hidden_dim=512,
    )
    torch.manual_seed(seed)
    return GroupViT(config).eval()


# ----------------------------------------------------------------------------- 1. prompt ensembles


def official_class_embeddings(model: GroupViT, templates: list[str]) -> torch.Tensor:
    """NVlabs/GroupViT ``build_text_embedding``: mean of the un-normalised projected prompts, normalised."""
    tokens = tokenize([t.format(name) for name in NAMES for t in templates], context_length=77)
    with torch.no_grad():
        projected = model.text_projector(model.text_encoder(tokens))
    return F.normalize(projected.view(len(NAMES), len(templates), -1).mean(dim=1), dim=-1)


def former_class_embeddings(model: GroupViT, templates: list[str]) -> torch.Tensor:
    """annofree before: each prompt embedding normalised, then the mean normalised."""
    tokens = tokenize([t.format(name) for name in NAMES for t in templates], context_length=77)
    with torch.no_grad():
        unit = model.encode_text(tokens)
    return F.normalize(unit.view(len(NAMES), len(templates), -1).mean(dim=1), dim=-1)


def prompt_ensembles(model: GroupViT) -> None:
    print("1. prompt ensembles: max |class embedding - official law| (20 VOC names)")
    for name in ("subset", "full"):
        templates = list(TEMPLATE_SETS[name])
        official = official_class_embeddings(model, templates)
        before = (former_class_embeddings(model, templates) - official).abs().max().item()
        after = (class_embeddings(model, NAMES, templates) - official).abs().max().item()
        print(f"   {len(templates):2d} templates: before {before:.2e}, after {after:.2e}")


# ----------------------------------------------------------------------------- 2. resize


def segmenter(model: GroupViT, **options) -> ZeroShotSegmenter:
    settings = VOC.segmenter_options() | {"with_background": False} | options
    return ZeroShotSegmenter(model, NAMES, **settings)


def opencv_reference(model: GroupViT, image: np.ndarray, mode: str) -> np.ndarray:
    """The official preprocessing with OpenCV itself, then the segmenter at that size; labels at the input size."""
    height, width = rescaled_size(*image.shape[:2], VOC.settings.short_side, VOC.settings.max_long_side)
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    logits = segmenter(model, mode=mode, short_side=None).logits(resized)[0]
    scores = F.interpolate(logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    return scores.argmax(dim=0).numpy()


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    """The share of pixels where two maps agree, in percent."""
    return f"{100 * float((a == b).mean()):.4f} %"


def resize_cases() -> list[tuple[str, np.ndarray, str]]:
    astronaut = np.array(photos.astronaut())
    voc_sized = np.array(Image.fromarray(astronaut).resize((500, 375), Image.BICUBIC))
    return [
        ("chelsea 300x451, upscaled x1.49, whole", np.array(photos.chelsea()), "whole"),
        ("coffee 400x600, upscaled x1.12, whole", np.array(photos.coffee()), "whole"),
        ("astronaut 512x512, downscaled x0.875, whole", astronaut, "whole"),
        ("hubble 872x1000, downscaled x0.51, whole", np.array(photos.hubble_deep_field()), "whole"),
        ("retina 1411x1411, downscaled x0.32, whole", np.array(photos.retina()), "whole"),
        ("VOC-sized 375x500, upscaled x1.19, slide", voc_sized, "slide"),
    ]


def stage1_groups(model: GroupViT, pixels: torch.Tensor, size: tuple[int, int], rule: str = "drop") -> np.ndarray:
    """Each pixel's most likely first-stage group (of 64) for float pixels ``[1, 3, h, w]``, at ``size``."""
    with torch.no_grad():
        out = model.encode_groups(PATCH_RULES[rule](model.normalize_pixels(pixels), model.config.image.patch_size))
        return group_maps(out.soft_assignments[0].transpose(1, 2), out.grid, size)[0].numpy()


def resize_agreement(model: GroupViT) -> None:
    print("2. resize: agreement with the OpenCV-based official reference: label maps | stage-1 group maps")
    for title, image, mode in resize_cases():
        reference = opencv_reference(model, image, mode)
        before = segmenter(model, mode=mode, resize="antialias").segment(image).label_map
        after = segmenter(model, mode=mode, resize="official").segment(image).label_map
        size = image.shape[:2]
        height, width = rescaled_size(*size, VOC.settings.short_side, VOC.settings.max_long_side)
        opencv = to_pixel_batch(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
        group_reference = stage1_groups(model, opencv, size)
        groups_before, groups_after = (
            stage1_groups(model, resize_short_side(to_pixel_batch(image), VOC.settings.short_side, None, method), size)
            for method in ("antialias", "official")
        )
        print(
            f"   {title} ({len(np.unique(reference))} classes): labels before {agreement(before, reference)}, "
            f"after {agreement(after, reference)} | groups before {agreement(groups_before, group_reference)}, "
            f"after {agreement(groups_after, group_reference)}"
        )


# ----------------------------------------------------------------------------- 3. the patch remainder


def official_whole_image(model: GroupViT, image: np.ndarray) -> np.ndarray:
    """The official rule written out: the patch convolution sees the image less its right/bottom remainder and
    the grouping maps are resized over the whole image (group_vit_seg.py ``resize_attn_map``)."""
    height, width = image.shape[:2]
    patch = model.config.image.patch_size
    text = class_embeddings(model, NAMES)
    with torch.no_grad():
        pixels = model.normalize_pixels(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        out = model.encode_groups(pixels[..., : height // patch * patch, : width // patch * patch])
        maps = out.grouping.transpose(1, 2).reshape(1, -1, *out.grid)
        group_index = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False).argmax(dim=1)
        affinity = group_class_affinity(out.group_embeds, out.image_embeds, text, model.scale(), topk=VOC.settings.topk)
        return pixel_logits(group_index, affinity, None)[0].argmax(dim=0).numpy()


def patch_remainder(model: GroupViT) -> None:
    image = np.array(Image.fromarray(photos.coffee()).resize((600, 448), Image.BICUBIC))  # 448 x 600
    reference = official_whole_image(model, image)
    before = segmenter(model, mode="whole", patch_remainder="fit").segment(image).label_map
    after = segmenter(model, mode="whole", patch_remainder="drop").segment(image).label_map
    pixels = to_pixel_batch(image)
    group_reference = stage1_groups(model, pixels[..., :, :592], (448, 600))  # the official crop, written out
    groups_before, groups_after = (stage1_groups(model, pixels, (448, 600), rule) for rule in ("fit", "drop"))
    print("3. patch remainder, whole mode, 448x600: agreement with the official rule: label maps | stage-1 groups")
    print(
        f"   ({len(np.unique(reference))} classes) labels before (fit) {agreement(before, reference)}, "
        f"after (drop) {agreement(after, reference)} | groups before {agreement(groups_before, group_reference)}, "
        f"after {agreement(groups_after, group_reference)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = random_model(args.seed)
    prompt_ensembles(model)
    resize_agreement(model)
    patch_remainder(model)


if __name__ == "__main__":
    main()
