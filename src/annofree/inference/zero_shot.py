"""Zero-shot semantic segmentation with GroupViT, following the reference evaluation.

The image is first resized so that its short side is ``short_side`` (``resize``: annofree's antialiased
resize by default, or the official evaluation's OpenCV-exact one, optionally capped by ``max_long_side``;
``annofree.inference.resize``). A crop side that is not a multiple of the patch size is resized to fit the
patch grid (``patch_remainder="fit"``, the default) or loses its remainder as in the official code
(``"drop"``); the benchmark protocols (``annofree.evaluation.protocols``) use the official choices.

Per crop (the whole image, or each sliding window):

1. The soft patch-to-group maps of the grouping stages are chained (``GroupOutput.grouping``,
   ``[h*w, G]``), resized bilinearly to the crop and each pixel takes its most likely group.
2. Group-class affinity: softmax over classes of ``group . class * scale``.
3. Image-level filter: the pooled image embedding is scored the same way and only its top-k classes
   are kept; the group logits of the other classes are set to -inf, softmaxed again and multiplied
   with the unmasked affinity.
4. Every pixel gets the affinity row of its group. Background is not a text query: a pixel is
   background when its best class score is below ``min(bg_thresh, largest affinity in the crop)``;
   the background channel holds 1 there and 0 elsewhere (as the official ``group_vit_seg.py``).

That is ``bg_rule="affinity"``, the default (the settings and their defaults:
:mod:`annofree.inference.settings`). ``bg_rule="similarity"`` (not in the paper) decides background by the raw
cosine similarity instead: a group is background when its best similarity among the image's top-k classes is
not above ``bg_thresh`` (a cosine, in [-1, 1]), and otherwise takes that class. The affinity is a softmax over
the class names, so it only says which name fits a group best, never whether any fits: a background group in a
scene with one object can have affinity 0.94 to that object. A model trained with the sigmoid multi-label loss
(``loss.multi_label_form: sigmoid``) learns absolute similarities, which can tell background from objects
(docs/learning.md, "Deciding background").

Logits of overlapping windows are averaged (with ``flip=True`` also those of the mirrored image, mirrored
back), resized bilinearly back to the input size and the label map is their argmax: label 0 is background
and label ``i`` the i-th class name (with ``with_background=False`` the labels are the class indices
themselves), in a :class:`annofree.inference.result.SegmentationResult`, the type every segmenter returns. The
pixel helpers this module shares with DenseSiam, ``viz`` and the ONNX export live in
:mod:`annofree.inference.pixels`; callers that may hold any model build their segmenter through
:func:`annofree.inference.segmenters.build_segmenter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from annofree.data.images import to_pixel_batch
from annofree.errors import UserError
from annofree.inference.pixels import (
    PATCH_RULES,
    ImageLike,
    channel_argmax,
    eval_mode,
    input_device_dtype,
    resize_bilinear,
    resize_short_side,
    upsample_argmax,
)
from annofree.inference.result import SegmentationResult
from annofree.inference.settings import (
    DEFAULT_SOURCE,
    DEFAULTS,
    GIVEN_SOURCE,
    ZeroShotSettings,
    describe_settings,
    resolve_settings,
    settings_notes,
)
from annofree.inference.sliding import slide, window_boxes
from annofree.precision import autocast, resolve_precision

BACKGROUND = "background"
Tokenizer = Callable[..., torch.Tensor]  # (texts, context_length=...) -> LongTensor [N, L]


# ----------------------------------------------------------------------------- text side


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """Stripped class names; a ``UserError`` for an empty list, an empty name or a duplicate."""
    if isinstance(class_names, str):
        raise UserError(f"class names must be a list of names, not the string {class_names!r}")
    names = [str(name).strip() for name in class_names]
    if not names:
        raise UserError("no class names given")
    if any(not name for name in names):
        raise UserError(f"empty class name in {list(class_names)!r}")
    seen: dict[str, str] = {}
    for name in names:
        # Prompts are lower-cased by the tokenizer, so "Cat" and "cat" would be the same query.
        key = name.lower()
        if key in seen:
            raise UserError(f"duplicated class name {name!r} (also given as {seen[key]!r})")
        seen[key] = name
    return names


def _templates(template: str | Sequence[str] | None) -> list[str]:
    if template is None:
        from annofree.data.captions import SEGMENTATION_TEMPLATE

        template = SEGMENTATION_TEMPLATE
    templates = [template] if isinstance(template, str) else list(template)
    if not templates or any("{}" not in t for t in templates):
        raise UserError(f"prompt templates must each contain '{{}}' for the class name, got {templates!r}")
    return templates


def class_embeddings(
    model: nn.Module,
    class_names: Sequence[str],
    template: str | Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``[C, D]`` unit-norm text embeddings of the classes.

    With several templates a class's embedding is the mean of its prompts' projected embeddings *before*
    normalisation, normalised once (the official ``build_text_embedding``): prompts the model embeds with a
    larger norm weigh more. A model without ``text_features`` (``OnnxGroupViT``, whose export gives unit-norm
    embeddings only) averages the unit-norm embeddings instead; with one template both laws agree.
    ``tokenizer`` defaults to the CLIP BPE tokenizer.
    """
    if tokenizer is None:
        from annofree.data.tokenizer import tokenize as tokenizer
    templates = _templates(template)
    prompts = [t.format(name) for name in class_names for t in templates]
    context = model.config.text.context_length
    device, _ = input_device_dtype(model)
    embed = getattr(model, "text_features", model.encode_text)
    with eval_mode(model):
        chunks = [
            embed(tokenizer(prompts[i : i + batch_size], context_length=context).to(device))
            for i in range(0, len(prompts), batch_size)
        ]
    embeds = torch.cat(chunks).float().view(len(class_names), len(templates), -1)
    return F.normalize(embeds.mean(dim=1), dim=-1)


# ----------------------------------------------------------------------------- the rule, step by step


def group_class_affinity(
    group_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    scale: float | torch.Tensor,
    topk: int | None = DEFAULTS.topk,
) -> torch.Tensor:
    """``[B, G, C]`` affinity of each group to each class, filtered by the image's top-k classes.

    ``group_embeds [B, G, D]``, ``image_embeds [B, D]`` and ``text_embeds [C, D]`` are unit norm.
    ``topk=None`` keeps every class (the filter then squares the affinity, as the reference does).
    """
    logits = group_embeds @ text_embeds.T * scale  # [B, G, C]
    affinity = logits.softmax(dim=-1)
    num_classes = text_embeds.shape[0]
    k = num_classes if topk is None else min(int(topk), num_classes)
    image_probs = (image_embeds @ text_embeds.T * scale).softmax(dim=-1)  # [B, C]
    keep = torch.zeros_like(image_probs, dtype=torch.bool)
    keep.scatter_(-1, image_probs.topk(k, dim=-1).indices, True)
    filtered = logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(dim=-1)
    return filtered * affinity


def group_class_similarity(
    group_embeds: torch.Tensor, image_embeds: torch.Tensor, text_embeds: torch.Tensor, topk: int | None = DEFAULTS.topk
) -> torch.Tensor:
    """``[B, G, C]`` cosine similarity of each group to each class; classes outside the image's top-k are -1.

    The unit-norm inputs are as for :func:`group_class_affinity`; the image's top-k classes are those most
    similar to its pooled embedding (the order the reference's filter uses). -1, the lowest cosine, rather
    than -inf keeps the scores finite for resizing and for averaging overlapping windows.
    """
    similarity = group_embeds @ text_embeds.T  # [B, G, C]
    num_classes = text_embeds.shape[0]
    k = num_classes if topk is None else min(int(topk), num_classes)
    keep = torch.zeros(similarity.shape[0], num_classes, dtype=torch.bool, device=similarity.device)
    keep.scatter_(-1, (image_embeds @ text_embeds.T).topk(k, dim=-1).indices, True)
    return similarity.masked_fill(~keep[:, None, :], -1.0)


def group_maps(grouping: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Soft grouping ``[B, h*w, G]`` on the patch grid -> ``[B, H, W]`` index of each pixel's group."""
    batch, _, groups = grouping.shape
    maps = grouping.transpose(1, 2).reshape(batch, groups, *grid)
    return channel_argmax(resize_bilinear(maps, size), dim=1)


def pixel_logits(group_index: torch.Tensor, affinity: torch.Tensor, bg_thresh: float | None) -> torch.Tensor:
    """Per-pixel logits ``[B, K, H, W]`` from group indices ``[B, H, W]`` and affinity ``[B, G, C]``.

    With ``bg_thresh`` (a float) a background channel comes first: 1 where the pixel's best class
    score is below ``min(bg_thresh, affinity.max())`` of its image, else 0. With ``None``, K = C.
    """
    scores = pixel_scores(group_index, affinity)
    if bg_thresh is None:
        return scores
    thresh = affinity.flatten(1).amax(dim=1).clamp(max=bg_thresh)  # [B]
    background = (scores.amax(dim=1) < thresh[:, None, None]).to(scores.dtype)
    return torch.cat([background[:, None], scores], dim=1)


def similarity_logits(group_index: torch.Tensor, similarity: torch.Tensor, bg_thresh: float | None) -> torch.Tensor:
    """Per-pixel logits ``[B, K, H, W]`` from group indices ``[B, H, W]`` and similarity ``[B, G, C]``.

    With ``bg_thresh`` (a cosine) a background channel comes first, holding ``bg_thresh`` everywhere: the
    argmax is background wherever no class is more similar than that (it wins ties). With ``None``, K = C.
    """
    scores = pixel_scores(group_index, similarity)
    if bg_thresh is None:
        return scores
    return torch.cat([torch.full_like(scores[:, :1], bg_thresh), scores], dim=1)


def pixel_scores(group_index: torch.Tensor, group_scores: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]``: each pixel takes the row of ``group_scores [B, G, C]`` of its group ``[B, H, W]``."""
    batch, height, width = group_index.shape
    classes = group_scores.shape[-1]
    flat = group_index.reshape(batch, -1, 1).expand(-1, -1, classes)
    return group_scores.gather(1, flat).transpose(1, 2).reshape(batch, classes, height, width)


def inference_precision(model, requested: str) -> tuple[str, str]:
    """``(precision, reason)`` the image encoder runs in: ``requested`` (auto | fp32 | bf16 | fp16) resolved for the
    model's device (:func:`annofree.precision.resolve_precision`). A model run outside torch (``OnnxGroupViT``)
    computes in its exported precision: only ``auto`` or ``fp32`` fit it."""
    if not isinstance(model, nn.Module):
        if requested not in ("auto", "fp32"):
            raise UserError(f"precision {requested!r} needs a torch model; an ONNX model runs as exported (fp32)")
        return "fp32", "the ONNX runtime runs the model as exported"
    try:
        return resolve_precision(requested, input_device_dtype(model)[0])
    except ValueError as exc:
        raise UserError(str(exc)) from None


# ----------------------------------------------------------------------------- the segmenter


class ZeroShotSegmenter:
    """Segment images into the given classes (plus background) with a GroupViT.

    Class embeddings are computed once here, from the model as it is now; build a new segmenter after
    changing the weights. Images are normalised with ``model.normalize_pixels`` and processed without
    gradients in eval mode (the model's mode is restored afterwards).

    The settings (:class:`annofree.inference.settings.ZeroShotSettings`: ``bg_thresh``, ``bg_rule``, ``mode``,
    ``window``, ``stride``, ``short_side``, ``topk``, ``flip``, ``prompts``) are resolved option by option: a
    keyword given here, else ``settings``, else the settings stored with the weights (``model.inference_settings``,
    which ``annofree.load`` reads from the run's ``inference.json``), else the defaults. ``self.settings`` holds
    the result, ``self.sources`` where each value came from and :meth:`describe_settings` says it in one line.

    Args:
        model: a ``GroupViT``, or anything with ``encode_groups``, ``encode_text``, ``normalize_pixels``,
            ``scale`` and ``config`` (e.g. ``annofree.inference.onnx_runtime.OnnxGroupViT``; see
            ``input_device_dtype`` for models that are not torch modules).
        class_names: the text queries; label ``i`` (1-based with background) is ``class_names[i-1]``.
        settings: the settings to start from instead of the weights' (``None``: the weights', else the defaults).
        template: a prompt template with ``{}``, or a list of them (embeddings averaged), instead of the
            ``prompts`` setting's.
        with_background: add the thresholded background channel as label 0.
        windows_per_batch: sliding windows (or images in whole mode) per forward pass.
        tokenizer: ``(texts, context_length=...) -> ids``; defaults to the CLIP BPE tokenizer.
        precision: what the image encoder computes in: ``"fp32"``, ``"bf16"`` / ``"fp16"`` (autocast), or
            ``"auto"`` (bf16 where the device runs it natively, :func:`annofree.precision.resolve_precision`).
            The class embeddings and everything after the encoder stay in float32. ``self.precision`` holds the
            choice, ``self.precision_reason`` why.
        source: how :meth:`describe_settings` names ``settings`` and ``options`` (e.g. "the command line").
        **options: single settings, e.g. ``bg_thresh=0.3``; an unknown name is a one-line error.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        settings: ZeroShotSettings | None = None,
        *,
        template: str | Sequence[str] | None = None,
        with_background: bool = True,
        windows_per_batch: int = 8,
        tokenizer: Tokenizer | None = None,
        precision: str = "fp32",
        source: str = GIVEN_SOURCE,
        **options: Any,
    ):
        stored = getattr(model, "inference_settings", None) if settings is None else None
        self.settings, self.sources = resolve_settings(
            stored, options, source, base=settings, base_source=DEFAULT_SOURCE if settings is None else source
        )
        if self.settings.mode == "slide":
            try:  # validate window and stride now rather than on the first image
                window_boxes(1, 1, self.settings.window, self.settings.stride)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        self.model = model
        self.class_names = check_class_names(class_names)
        self.with_background = with_background
        self.windows_per_batch = max(1, int(windows_per_batch))
        self.patch_size = int(model.config.image.patch_size)
        self.precision, self.precision_reason = inference_precision(model, precision)
        templates = self.settings.template() if template is None else template
        self.text_embeds = class_embeddings(model, self.class_names, templates, tokenizer)

    def describe_settings(self) -> str:
        """One line: the settings in use and where each came from (given, the weights' file, the defaults)."""
        return describe_settings(self.settings, self.sources)

    @property
    def short_side(self) -> int | None:
        """The shorter side the model sees (``None``: the image's own size)."""
        return self.settings.short_side

    def notes(self) -> list[str]:
        """What a command says before segmenting: the settings line, a note for weights trained on synthetic
        scenes only, and one for each group of classes these weights cannot tell apart."""
        lines = settings_notes(self.settings, self.sources, getattr(self.model, "inference_settings", None))
        for same in self.indistinguishable_classes():
            alike = ", ".join(same)
            lines.append(f"note: these weights embed the classes {alike} alike (words they never learned?): they "
                         f"cannot tell them apart, and {same[0]} wins wherever one of them does")  # fmt: skip
        return lines

    def indistinguishable_classes(self, tolerance: float = 1e-4) -> list[list[str]]:
        """Groups of class names whose prompts these weights embed alike (cosine within ``tolerance`` of 1).

        Such classes tie everywhere and the first of them wins every pixel: typically words that the weights
        never trained on (the demo's packed checkpoint holds zeros for them)."""
        similar = ((self.text_embeds @ self.text_embeds.T) >= 1 - tolerance).tolist()
        groups, seen = [], set()
        for row in similar:
            members = [j for j, alike in enumerate(row) if alike and j not in seen]
            seen.update(members)
            if len(members) > 1:
                groups.append([self.class_names[j] for j in members])
        return groups

    @property
    def labels(self) -> list[str]:
        """Name of each label id: background first when there is one."""
        return [BACKGROUND, *self.class_names] if self.with_background else list(self.class_names)

    @property
    def device(self) -> torch.device:
        return input_device_dtype(self.model)[0]

    def crop_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised crops ``[N, 3, h, w]`` (any size) -> logits ``[N, K, h, w]`` (float32)."""
        size = tuple(pixels.shape[-2:])
        with autocast(self.precision, pixels.device):
            out = self.model.encode_groups(PATCH_RULES[self.settings.patch_remainder](pixels, self.patch_size))
        text = self.text_embeds.to(out.group_embeds.device)
        groups, image = out.group_embeds.float(), out.image_embeds.float()
        group_index = group_maps(out.grouping.float(), out.grid, size)
        settings = self.settings
        bg_thresh = settings.bg_thresh if self.with_background else None
        if settings.bg_rule == "similarity":
            return similarity_logits(group_index, group_class_similarity(groups, image, text, settings.topk), bg_thresh)
        affinity = group_class_affinity(groups, image, text, self.model.scale().float(), settings.topk)
        return pixel_logits(group_index, affinity, bg_thresh)

    def logits(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Logits ``[B, K, h, w]`` at the working resolution (after the short-side resize)."""
        return self._logits(to_pixel_batch(images))

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        device, dtype = input_device_dtype(self.model)
        pixels = pixels.to(device=device, dtype=torch.float32)
        if self.settings.short_side is not None:
            settings = self.settings
            pixels = resize_short_side(pixels, settings.short_side, settings.max_long_side, settings.resize)
        with eval_mode(self.model):
            pixels = self.model.normalize_pixels(pixels).to(dtype)
            logits = self._one_pass(pixels)
            if self.settings.flip:  # the mirrored image's logits, mirrored back, averaged in
                logits = (logits + self._one_pass(pixels.flip(-1)).flip(-1)) / 2
            return logits

    def _one_pass(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.settings.mode == "slide":
            window, stride = self.settings.window, self.settings.stride
            return slide(self.crop_logits, pixels, window, stride, self.windows_per_batch)
        parts = [
            self.crop_logits(pixels[i : i + self.windows_per_batch])
            for i in range(0, pixels.shape[0], self.windows_per_batch)
        ]
        return torch.cat(parts)

    def segment_batch(self, images: ImageLike | Sequence[ImageLike]) -> list[SegmentationResult]:
        """Segment several images of one size (a list, or a batched array/tensor)."""
        pixels = to_pixel_batch(images)
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        results = []
        for one in self._logits(pixels).float():
            label_map = upsample_argmax(one, size).cpu().numpy().astype(np.int64)
            results.append(SegmentationResult(label_map, self.labels, one.cpu()))
        return results

    def segment(self, image: ImageLike) -> SegmentationResult:
        """Segment one image at its own resolution: a path, a PIL image, or an array or tensor of any dtype and
        channel count (grey, grey + alpha, RGB, RGBA; see :func:`annofree.data.images.to_pixel_batch`)."""
        return self.segment_batch([image])[0]


__all__ = [
    "BACKGROUND",
    "ZeroShotSegmenter",
    "check_class_names",
    "class_embeddings",
    "group_class_affinity",
    "group_class_similarity",
    "group_maps",
    "inference_precision",
    "pixel_logits",
    "pixel_scores",
    "similarity_logits",
]
