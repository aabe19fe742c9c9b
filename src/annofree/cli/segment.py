"""``annofree segment``: segment image files with GroupViT or DenseSiam weights (the weights decide).

GroupViT (zero-shot, ``--classes`` required): for each image NAME it writes NAME.png (uint8 class ids:
0 = background, i = i-th class given), NAME_overlay.png (the image with coloured classes and a legend) and
NAME.json (classes, pixel fractions, size). ``--vis groups`` also writes NAME_groups.png: the image beside
the groups of each grouping stage (:func:`annofree.viz.groups_panel`).

DenseSiam (unsupervised): NAME.png (uint8 cluster ids) and NAME_overlay.png (legend of cluster ids);
``--classes`` is an error, since clusters have no names.

One path for every method: the model's segmenter comes from :func:`annofree.inference.segmenters.build_segmenter`
(the method registered how to build it; ``SegmenterKind.named_classes`` says whether it takes ``--classes``), every
segmenter returns a :class:`annofree.inference.result.SegmentationResult`, and :func:`write_outputs` writes it.

``--onnx DIR`` replaces ``--weights`` with a GroupViT exported by ``annofree export onnx``: the same zero-shot
segmentation and outputs, the model run by onnxruntime (:class:`annofree.inference.onnx_runtime.OnnxGroupViT`).

A file that cannot be read is reported on one line and the others are still processed; the exit code is
then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from annofree.cli.common import (
    COMMAND_LINE,
    ImageFile,
    add_image_pipeline_options,
    add_inference_options,
    check_weights_or_onnx,
    load_segmentation_model,
    make_out_dir,
    process_images,
    segmenter_options,
)
from annofree.errors import UserError
from annofree.inference.result import SegmentationResult
from annofree.inference.zero_shot import BACKGROUND, check_class_names

OUTPUT_SUFFIXES = ("", "_overlay", "_groups")  # NAME.png and NAME.json, NAME_overlay.png, NAME_groups.png
MAX_LABELS = 256  # label ids 0..255 fit in the uint8 PNG


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment images into named classes (GroupViT) or into clusters (DenseSiam)",
        description="GroupViT weights (zero-shot, --classes required): for each image write NAME.png (class ids, "
        "0 = background, i = i-th class), NAME_overlay.png and NAME.json into --out. DenseSiam weights "
        "(unsupervised, no --classes): NAME.png (cluster ids) and NAME_overlay.png; the GroupViT-only options "
        "(--bg-thresh, --bg-rule, --flip, --mode, --window, --stride, --topk, --prompts, --resize, --max-long-side, "
        "--patch-remainder) are ignored. GroupViT images are resized as suits photos (antialiased when shrinking, "
        "sides fitted to the patch grid); --resize official --max-long-side 2048 --patch-remainder drop is the "
        "official GroupViT evaluation's pipeline, which `annofree evaluate` uses. --onnx DIR instead of --weights: "
        "a GroupViT exported by `annofree export onnx`, run with onnxruntime (same outputs).",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files, or folders of images searched recursively (outputs keep each file's sub-path)",
    )
    parser.add_argument(
        "--classes", default=None, help='GroupViT only, required there: comma-separated class names, e.g. "cat,dog"'
    )
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    add_inference_options(parser, onnx=True)
    add_image_pipeline_options(parser)
    parser.add_argument("--alpha", type=float, default=0.5, help="colour opacity of the overlay (default 0.5)")
    parser.add_argument(
        "--vis",
        choices=["overlay", "groups"],
        default="overlay",
        help="groups: also NAME_groups.png, the image beside the groups of each grouping stage (GroupViT; one pass "
        "over the whole image at --short-side; colours are group ids, one colour per group of a stage)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only errors: no progress bar (shown on a terminal), no line per image",
    )
    return parser


def parse_classes(text: str) -> list[str]:
    """``"cat, dog,grass"`` -> names; a one-line error for an empty list, empty names or duplicates."""
    parts = text.split(",")
    if not any(p.strip() for p in parts):
        raise UserError(f'--classes {text!r}: no class names given (e.g. --classes "cat,dog,grass")')
    try:
        names = check_class_names(parts)
    except UserError as exc:
        raise UserError(f"--classes {text!r}: {exc}") from None
    if any(name.lower() == BACKGROUND for name in names):
        raise UserError(f"--classes {text!r}: 'background' is implicit (label 0, set by --bg-thresh); leave it out")
    if len(names) > 254:
        raise UserError(f"--classes: at most 254 classes fit in the uint8 label images, got {len(names)}")
    return names


def collect_images(inputs: Sequence[str]) -> tuple[list[ImageFile], list[str]]:
    """Files to process, each with a unique output name, and errors for inputs that do not exist.

    Folders are searched recursively, as ``annofree train`` does (:func:`annofree.data.image_folder.list_images`:
    image suffixes, hidden files and folders skipped), and outputs keep each file's sub-path inside the folder
    (``photos/2024/a.jpg`` given as ``photos`` -> ``OUT/2024/a.png``). Files named explicitly are tried whatever
    their suffix.
    """
    from annofree.data.image_folder import list_images

    wanted: list[tuple[Path, str]] = []
    errors: list[str] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            try:
                inside = [Path(file) for file in list_images(path)]
            except UserError as exc:
                errors.append(str(exc))
                continue
            wanted += [(file, file.relative_to(path).with_suffix("").as_posix()) for file in inside]
        elif path.exists():
            wanted.append((path, path.stem))
        else:
            errors.append(f"{path}: no such file or directory")
    names = output_names(wanted)
    return [ImageFile(path, name) for (path, _), name in zip(wanted, names, strict=True)], errors


def output_names(wanted: Sequence[tuple[Path, str]]) -> list[str]:
    """One output name per ``(file, wanted name)`` such that no two inputs share an output file (NAME.png,
    NAME.json, NAME_overlay.png, NAME_groups.png), also where case is ignored: ``a.png`` and ``a.jpg`` -> ``a``,
    ``a_jpg``; then ``_2``, ``_3`` ...; ``a.jpg`` and ``a_overlay.jpg`` do not overwrite each other's files."""
    names: list[str] = []
    taken: set[str] = set()  # every output stem in use, lower-cased

    def free(name: str) -> bool:
        return not any((name + suffix).lower() in taken for suffix in OUTPUT_SUFFIXES)

    for path, name in wanted:
        candidates = [name]
        if path.suffix:
            candidates.append(f"{name}_{path.suffix.lstrip('.').lower()}")
        base = candidates[-1]
        n = 2
        while not any(free(c) for c in candidates):
            candidates, n = [f"{base}_{n}"], n + 1
        chosen = next(c for c in candidates if free(c))
        taken.update((chosen + suffix).lower() for suffix in OUTPUT_SUFFIXES)
        names.append(chosen)
    return names


def write_outputs(
    out_dir: Path, name: str, source: Path, image: np.ndarray, result: SegmentationResult, alpha: float, summary: bool
) -> None:
    """NAME.png (label ids, PNG mode L), NAME_overlay.png and, with ``summary`` (named classes), NAME.json in
    ``out_dir`` (each written atomically)."""
    from annofree.io import atomic_write
    from annofree.viz import overlay

    labels = Image.fromarray(result.label_map.astype(np.uint8))  # 2-D uint8: mode "L"
    atomic_write(out_dir / f"{name}.png", lambda tmp: labels.save(tmp, format="PNG"))
    picture = overlay(image, result.label_map, result.class_names, alpha=alpha)
    atomic_write(out_dir / f"{name}_overlay.png", lambda tmp: picture.save(tmp, format="PNG"))
    if not summary:
        return
    height, width = result.size
    record = {
        "image": str(source),
        "classes": result.class_names,
        "fractions": result.fractions(),
        "size": {"width": width, "height": height},
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(out_dir / f"{name}.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_group_maps(out_dir: Path, name: str, model, image: np.ndarray, short_side: int | None) -> None:
    """NAME_groups.png: image | stage 1 groups | stage 2 groups ..., at the image's size (written atomically)."""
    from annofree.io import atomic_write
    from annofree.viz import grouping_stages, groups_panel

    maps, counts = grouping_stages(model, image, short_side or None)
    picture = groups_panel(image, maps, counts)
    atomic_write(out_dir / f"{name}_groups.png", lambda tmp: picture.save(tmp, format="PNG"))


def shares_line(result: SegmentationResult, named: bool, top: int = 3) -> str:
    """The report line's tail: each named class's share of the pixels, in label order; for clusters, how many
    appear and the largest ``top`` of them."""
    fractions = result.fractions()
    if named:
        return ", ".join(f"{k} {100 * v:.1f}%" for k, v in fractions.items() if v > 0)
    present = sorted((name for name, share in fractions.items() if share > 0), key=lambda n: -fractions[n])
    listed = ", ".join(f"{name} {100 * fractions[name]:.1f}%" for name in present[:top])
    return f"{len(present)} clusters ({listed}{', ...' if len(present) > top else ''})"


def class_names_for(args: argparse.Namespace, kind) -> list[str] | None:
    """``--classes`` parsed when the weights take class names; a one-line error when it is missing, or given to
    weights whose labels are their own (clusters)."""
    if not kind.named_classes:
        if args.classes is not None:
            raise UserError(
                f"--classes: {kind.title} weights segment into unnamed clusters, not classes; leave it out "
                "(`annofree evaluate` matches clusters to a folder's classes)"
            )
        return None
    if args.classes is None:
        raise UserError(f'--classes is required with {kind.title} weights or --onnx (e.g. --classes "cat,dog,grass")')
    return parse_classes(args.classes)


def run(args: argparse.Namespace) -> int:
    from annofree.data.images import load_image
    from annofree.inference.segmenters import build_segmenter, segmenter_kind

    check_weights_or_onnx(args)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must lie in [0, 1], got {args.alpha}")
    files, errors = collect_images(args.images)
    if not files:
        raise UserError("; ".join(errors) if errors else "no images given")
    model = load_segmentation_model(args)
    kind = segmenter_kind(model)
    groups = getattr(args, "vis", "overlay") == "groups"
    if groups and not kind.grouping_stages:
        raise UserError(f"--vis groups needs GroupViT weights: {kind.title} has no grouping stages")
    options = segmenter_options(args)
    segmenter = build_segmenter(model, class_names_for(args, kind), source=COMMAND_LINE, **options)
    if len(segmenter.labels) > MAX_LABELS:
        raise UserError(f"{args.weights}: {len(segmenter.labels)} clusters do not fit in uint8 cluster maps")
    out_dir = make_out_dir(args.out)
    for line in [] if getattr(args, "quiet", False) else segmenter.notes():  # --quiet: errors only
        print(line, file=sys.stderr)

    def work(path: Path, name: str) -> str:
        image = load_image(path)
        result = segmenter.segment(image)
        write_outputs(out_dir, name, path, image, result, args.alpha, summary=kind.named_classes)
        if groups:
            write_group_maps(out_dir, name, model, image, segmenter.short_side)
        shares = shares_line(result, named=kind.named_classes)
        return f"{path} -> {out_dir / name}.png ({image.shape[1]}x{image.shape[0]}): {shares}"

    return process_images(files, errors, out_dir, work, quiet=getattr(args, "quiet", False))
