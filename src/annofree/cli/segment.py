"""``annofree segment``: segment image files with GroupViT or DenseSiam weights (the weights decide).

GroupViT (zero-shot, ``--classes`` required): for each image NAME it writes NAME.png (uint8 class ids:
0 = background, i = i-th class given), NAME_overlay.png (the image with coloured classes and a legend) and
NAME.json (classes, pixel fractions, size). ``--vis groups`` also writes NAME_groups.png: the image beside
the groups of each grouping stage (:func:`annofree.viz.groups_panel`).

DenseSiam (unsupervised, see :mod:`annofree.cli.clusters`): NAME.png (uint8 cluster ids) and
NAME_overlay.png (legend of cluster ids); ``--classes`` is an error, since clusters have no names.

``--onnx DIR`` replaces ``--weights`` with a GroupViT exported by ``annofree export onnx``: the same zero-shot
segmentation and outputs, the model run by onnxruntime (:class:`annofree.inference.onnx_runtime.OnnxGroupViT`).

A file that cannot be read is reported on one line and the others are still processed; the exit code is
then 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from annofree.errors import UserError
from annofree.inference.zero_shot import (
    BACKGROUND,
    BG_RULES,
    SegmentationResult,
    ZeroShotSegmenter,
    check_class_names,
)

GROUPVIT_SHORT_SIDE = 448  # --short-side when not given; DenseSiam: inference.clusters.DENSESIAM_SHORT_SIDE
OUTPUT_SUFFIXES = ("", "_overlay", "_groups")  # NAME.png and NAME.json, NAME_overlay.png, NAME_groups.png


# ----------------------------------------------------------------------------- shared with `annofree evaluate`


def add_inference_options(parser: argparse.ArgumentParser, onnx: bool = False, protocol: bool = False) -> None:
    """Options of the zero-shot segmenter (also used by ``annofree evaluate``); DenseSiam reads only
    ``--weights``, ``--short-side`` and ``--device``. With ``onnx``, ``--onnx DIR`` may replace ``--weights``
    (the caller checks that exactly one is given). With ``protocol``, options left unset are ``None``: the
    caller fills them from a benchmark's protocol."""
    parser.add_argument(
        "--weights",
        required=not onnx,
        help="GroupViT or DenseSiam weights: a run directory, a .safetensors file or a pretrained name "
        "(groupvit-gcc-yfcc, groupvit-gcc-redcaps)",
    )
    if onnx:
        parser.add_argument(
            "--onnx",
            metavar="DIR",
            default=None,
            help="instead of --weights: a GroupViT exported by `annofree export onnx`, run with onnxruntime "
            "(--device cpu, or cuda with onnxruntime-gpu)",
        )
    parser.add_argument(
        "--bg-thresh",
        type=float,
        default=0.95,
        help="pixels whose best class score is below this (or below the best group score) are background "
        "(reference: VOC 0.95, Context 0.35; default %(default)s); with --bg-rule similarity a cosine, e.g. 0.2",
    )
    parser.add_argument(
        "--bg-rule",
        choices=list(BG_RULES),
        default="affinity",
        help="what --bg-thresh thresholds: the reference's group-class affinity (a softmax over the classes), or "
        "the cosine similarity, for models trained with the sigmoid multi-label loss (default %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=["whole", "slide"],
        default="whole",
        help="one pass over the whole image, or sliding windows (the paper's protocol; default %(default)s)",
    )
    parser.add_argument("--window", type=int, default=448, help="sliding window size in pixels (default %(default)s)")
    parser.add_argument("--stride", type=int, default=224, help="sliding window stride in pixels (default %(default)s)")
    parser.add_argument(
        "--short-side",
        type=int,
        default=None,
        metavar="N",
        help="resize the shorter image side to N before inference, 0 to keep the size (default: "
        + (
            "the protocol's; on a folder 448 for GroupViT, the folder's size for DenseSiam"
            if protocol
            else "448 for GroupViT; 320 for DenseSiam, the DenseSiam protocol's"
        )
        + "); results are always at the input's size",
    )
    parser.add_argument("--topk", type=int, default=5, help="classes kept by the image-level filter (default 5)")
    parser.add_argument(
        "--flip",
        action="store_true",
        help="also segment the mirrored image and average the two (test-time augmentation; twice the work)",
    )
    parser.add_argument(
        "--prompts",
        choices=["single", "ensemble"],
        default="single",
        help="'a photo of a {}.' or the average over 80 ImageNet prompt templates (default %(default)s)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    if protocol:
        parser.set_defaults(bg_thresh=None, bg_rule=None, mode=None, window=None, stride=None, topk=None, flip=None)


def add_image_pipeline_options(parser: argparse.ArgumentParser, protocol: bool = False) -> None:
    """How images are resized and fitted to the patch grid (``annofree segment`` and ``annofree evaluate``).

    Unset, they are ``None``: ``ZeroShotSegmenter``'s defaults apply (annofree's choices for photos), or with
    ``protocol`` the benchmark protocol's (the official GroupViT evaluation's)."""
    from annofree.evaluation.protocols import ZeroShotProtocol
    from annofree.inference.resize import RESIZE_METHODS
    from annofree.inference.zero_shot import PATCH_RULES

    def default(name: str) -> str:
        if protocol:
            return f"the protocol's, {getattr(ZeroShotProtocol, name)}"
        value = inspect.signature(ZeroShotSegmenter).parameters[name].default
        return "none" if value is None else str(value)

    parser.add_argument(
        "--resize",
        choices=list(RESIZE_METHODS),
        default=None,
        help="how the image is resized to --short-side: 'antialias' (antialiased when shrinking, better for photos) "
        "or 'official' (as the official GroupViT evaluation: OpenCV's bilinear on the 8-bit image, no "
        f"antialiasing; the benchmarks' default) (default: {default('resize')})",
    )
    parser.add_argument(
        "--max-long-side",
        type=int,
        default=None,
        metavar="N",
        help="scale the image less where its long side would pass N, 0 for no cap (the official evaluation caps at "
        f"2048) (default: {default('max_long_side')})",
    )
    parser.add_argument(
        "--patch-remainder",
        choices=list(PATCH_RULES),
        default=None,
        help="sides that are not a multiple of the patch size: 'fit' resizes the crop to the nearest multiple "
        "(every pixel counts) or 'drop' drops the right and bottom remainder, as the official GroupViT code does "
        f"(default: {default('patch_remainder')})",
    )


def image_pipeline_options(args: argparse.Namespace) -> dict:
    """The options of ``add_image_pipeline_options`` that were given, as ``ZeroShotSegmenter`` keywords
    (``--max-long-side 0``: ``None``, no cap)."""
    given = {key: getattr(args, key, None) for key in ("resize", "patch_remainder", "max_long_side")}
    options = {key: value for key, value in given.items() if value is not None}
    if "max_long_side" in options:
        if options["max_long_side"] < 0:
            raise UserError(f"--max-long-side must be 0 (no cap) or positive, got {options['max_long_side']}")
        options["max_long_side"] = options["max_long_side"] or None
    return options


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def load_model(weights: str | Path, device: torch.device):
    """Any deployable model (GroupViT, DenseSiam) for inference; the caller dispatches on its type."""
    from annofree.weights import load

    return load(weights, device=device)


def is_densesiam(model) -> bool:
    from annofree.models.densesiam import DenseSiam

    return isinstance(model, DenseSiam)


def check_groupvit(model, weights: str | Path):
    """``model`` itself when it is a GroupViT; a one-line error naming the weights otherwise."""
    from annofree.models import GroupViT

    if not isinstance(model, GroupViT):
        raise UserError(f"{weights}: zero-shot segmentation needs GroupViT weights, not {type(model).__name__}")
    return model


def check_short_side(args: argparse.Namespace, default: int | None) -> None:
    """``--short-side``: unset -> the model kind's default; negative -> a one-line error."""
    if args.short_side is None:
        args.short_side = default or 0
    if args.short_side < 0:
        raise UserError(f"--short-side must be 0 (keep) or positive, got {args.short_side}")


def segmenter_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``ZeroShotSegmenter`` from the parsed options."""
    from annofree.data.captions import PROMPT_TEMPLATES, SEGMENTATION_TEMPLATE

    check_short_side(args, GROUPVIT_SHORT_SIDE)
    if args.mode == "slide" and (args.window < 1 or args.stride < 1):
        raise UserError(f"--window and --stride must be positive, got {args.window} and {args.stride}")
    return {
        "bg_thresh": args.bg_thresh,
        "bg_rule": args.bg_rule,
        "flip": args.flip,
        "topk": args.topk,
        "template": list(PROMPT_TEMPLATES) if args.prompts == "ensemble" else SEGMENTATION_TEMPLATE,
        "mode": args.mode,
        "window": args.window,
        "stride": args.stride,
        "short_side": args.short_side or None,
        **image_pipeline_options(args),
    }


# ----------------------------------------------------------------------------- segment


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


@dataclass(frozen=True)
class ImageFile:
    """An input image and its output name: the file's stem, under its sub-path inside a folder given."""

    path: Path
    name: str


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


def write_outputs(out_dir: Path, name: str, source: Path, image: np.ndarray, result: SegmentationResult, alpha: float):
    """NAME.png, NAME_overlay.png and NAME.json in ``out_dir`` (each written atomically)."""
    from annofree.viz import overlay
    from annofree.weights import atomic_write

    labels = Image.fromarray(result.label_map.astype(np.uint8))  # 2-D uint8: mode "L"
    atomic_write(out_dir / f"{name}.png", lambda tmp: labels.save(tmp, format="PNG"))
    picture = overlay(image, result.label_map, result.class_names, alpha=alpha)
    atomic_write(out_dir / f"{name}_overlay.png", lambda tmp: picture.save(tmp, format="PNG"))
    height, width = result.size
    summary = {
        "image": str(source),
        "classes": result.class_names,
        "fractions": result.fractions(),
        "size": {"width": width, "height": height},
    }
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(out_dir / f"{name}.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_group_maps(out_dir: Path, name: str, model, image: np.ndarray, short_side: int | None) -> None:
    """NAME_groups.png: image | stage 1 groups | stage 2 groups ..., at the image's size (written atomically)."""
    from annofree.viz import grouping_stages, groups_panel
    from annofree.weights import atomic_write

    maps, counts = grouping_stages(model, image, short_side or None)
    picture = groups_panel(image, maps, counts)
    atomic_write(out_dir / f"{name}_groups.png", lambda tmp: picture.save(tmp, format="PNG"))


def make_out_dir(text: str) -> Path:
    """--out created, checked writable and locked against a second writer until the command ends."""
    from annofree.cli import hold_out_dir

    return hold_out_dir(text, "--out")


def process_images(files: Sequence[ImageFile], errors: Sequence[str], out_dir: Path, work, quiet: bool = False) -> int:
    """Run ``work(path, name) -> report line`` on every file; a failed file is reported and skipped.

    A progress bar with the time left goes to stderr when it is a terminal (not with ``quiet``); the report
    lines go to stdout (not with ``quiet``). Returns the exit code: 1 when any input failed (including
    ``errors`` found while collecting), else 0.
    """
    from tqdm import tqdm

    for message in errors:
        print(f"annofree: error: {message}", file=sys.stderr)
    failed = len(errors)
    show_bar = not quiet and sys.stderr.isatty()
    with tqdm(total=len(files), desc="segment", unit="img", file=sys.stderr, disable=not show_bar) as bar:
        for item in files:
            bar.set_postfix_str(item.path.name)
            try:
                (out_dir / item.name).parent.mkdir(parents=True, exist_ok=True)
                report = work(item.path, item.name)
            except UserError as exc:
                bar.write(f"annofree: error: {exc}", file=sys.stderr)
                failed += 1
            except Exception as exc:  # one bad file (out of memory, disk full...) must not stop the others
                line = f"annofree: error: {item.path}: {type(exc).__name__}: {exc}".splitlines()[0]
                bar.write(line, file=sys.stderr)
                failed += 1
            else:
                if not quiet:
                    bar.write(report, file=sys.stdout)
            bar.update()
    done = len(files) + len(errors) - failed
    if not quiet or failed:
        print(f"segmented {done} of {len(files) + len(errors)} inputs into {out_dir}", file=sys.stderr)
    return 1 if failed else 0


def load_onnx(directory: str, device: str | None):
    """An ``OnnxGroupViT`` (the zero-shot segmenter takes it as it takes a GroupViT); CPU unless ``device``."""
    from annofree.inference.onnx_runtime import OnnxGroupViT

    return OnnxGroupViT(directory, device=device or "cpu")


def check_weights_or_onnx(args: argparse.Namespace) -> None:
    """Exactly one model source, ``--weights`` or ``--onnx`` (see ``add_inference_options(onnx=True)``)."""
    if (args.weights is None) == (args.onnx is None):
        raise UserError("give exactly one of --weights (a run directory or .safetensors file) and --onnx DIR")


def run(args: argparse.Namespace) -> int:
    check_weights_or_onnx(args)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must lie in [0, 1], got {args.alpha}")
    files, errors = collect_images(args.images)
    if not files:
        raise UserError("; ".join(errors) if errors else "no images given")
    if args.onnx is not None:
        return _segment_zero_shot(args, load_onnx(args.onnx, args.device), files, errors)
    model = load_model(args.weights, resolve_device(args.device))
    if is_densesiam(model):
        from annofree.cli.clusters import segment_clusters

        if getattr(args, "vis", "overlay") == "groups":
            raise UserError("--vis groups needs GroupViT weights: DenseSiam has no grouping stages")
        return segment_clusters(args, model, files, errors)
    return _segment_zero_shot(args, check_groupvit(model, args.weights), files, errors)


def _segment_zero_shot(args: argparse.Namespace, model, files: list[ImageFile], errors: list[str]) -> int:
    from annofree.data.images import load_image

    if args.classes is None:
        raise UserError('--classes is required with GroupViT weights or --onnx (e.g. --classes "cat,dog,grass")')
    class_names = parse_classes(args.classes)
    segmenter = ZeroShotSegmenter(model, class_names, **segmenter_options(args))
    out_dir = make_out_dir(args.out)

    def work(path: Path, name: str) -> str:
        image = load_image(path)
        result = segmenter.segment(image)
        write_outputs(out_dir, name, path, image, result, args.alpha)
        if getattr(args, "vis", "overlay") == "groups":
            write_group_maps(out_dir, name, model, image, args.short_side)
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in result.fractions().items() if v > 0)
        return f"{path} -> {out_dir / name}.png ({image.shape[1]}x{image.shape[0]}): {shares}"

    return process_images(files, errors, out_dir, work, quiet=getattr(args, "quiet", False))
