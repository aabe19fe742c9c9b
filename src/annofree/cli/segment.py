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
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from annofree.errors import UserError
from annofree.inference.settings import (
    BG_RULES,
    DEFAULT_SOURCE,
    DEFAULTS,
    MODES,
    PROMPTS,
    SETTINGS_NAME,
    SYNTHETIC_NOTE,
    ZeroShotSettings,
    describe_settings,
    resolve_settings,
)
from annofree.inference.zero_shot import (
    BACKGROUND,
    SegmentationResult,
    ZeroShotSegmenter,
    check_class_names,
)

OUTPUT_SUFFIXES = ("", "_overlay", "_groups")  # NAME.png and NAME.json, NAME_overlay.png, NAME_groups.png


# ----------------------------------------------------------------------------- shared with `annofree evaluate`


SETTING_OPTIONS = {  # ZeroShotSettings field -> its command-line option
    "bg_thresh": "--bg-thresh",
    "bg_rule": "--bg-rule",
    "mode": "--mode",
    "window": "--window",
    "stride": "--stride",
    "short_side": "--short-side",
    "topk": "--topk",
    "flip": "--flip",
    "prompts": "--prompts",
}
COMMAND_LINE = "the command line"  # the source of the options given there, in the settings line


def _default(name: str, protocol: bool) -> str:
    """Where an unset option's value comes from, for --help (the value itself is ZeroShotSettings's)."""
    value = getattr(DEFAULTS, name)
    shown = "on" if value is True else "off" if value is False else "keep" if value is None else value
    weights = f"the weights' {SETTINGS_NAME}, else {shown}"
    return f"default: the benchmark's protocol; with --data {weights}" if protocol else f"default: {weights}"


def add_inference_options(parser: argparse.ArgumentParser, onnx: bool = False, protocol: bool = False) -> None:
    """Options of the zero-shot segmenter (also used by ``annofree evaluate`` and ``annofree app``); DenseSiam reads
    only ``--weights``, ``--short-side`` and ``--device``. With ``onnx``, ``--onnx DIR`` may replace ``--weights``
    (the caller checks that exactly one is given). Options left unset are ``None``: their values come from the
    weights' settings file or the defaults (``segmenter_options``), or, with ``protocol``, from a benchmark's
    published protocol (which --help then says)."""
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
        help="pixels whose best class score is below this (or below the best group score) are background "
        f"(reference: VOC 0.95, Context 0.35; {_default('bg_thresh', protocol)}); with --bg-rule similarity a "
        "cosine, e.g. 0.2",
    )
    parser.add_argument(
        "--bg-rule",
        choices=list(BG_RULES),
        help="what --bg-thresh thresholds: the reference's group-class affinity (a softmax over the classes), or "
        "the cosine similarity, for models trained with the sigmoid multi-label loss "
        f"({_default('bg_rule', protocol)})",
    )
    parser.add_argument(
        "--mode",
        choices=list(MODES),
        help=f"one pass over the whole image, or sliding windows (the paper's protocol; {_default('mode', protocol)})",
    )
    parser.add_argument("--window", type=int, help=f"sliding window size in pixels ({_default('window', protocol)})")
    parser.add_argument("--stride", type=int, help=f"sliding window stride in pixels ({_default('stride', protocol)})")
    densesiam = "320 on a benchmark, the folder's size with --data" if protocol else "320, the DenseSiam protocol's"
    parser.add_argument(
        "--short-side",
        type=int,
        metavar="N",
        help="resize the shorter image side to N before inference, 0 to keep the size; results are always at the "
        f"input's size (GroupViT {_default('short_side', protocol)}; DenseSiam default: {densesiam})",
    )
    parser.add_argument(
        "--topk", type=int, help=f"classes kept by the image-level filter ({_default('topk', protocol)})"
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="also segment the mirrored image and average the two (test-time augmentation; twice the work; "
        f"{_default('flip', protocol)})",
    )
    parser.add_argument(
        "--prompts",
        choices=list(PROMPTS),
        help=f"'a photo of a {{}}.' or the average over 80 ImageNet prompt templates ({_default('prompts', protocol)})",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def add_image_pipeline_options(parser: argparse.ArgumentParser, protocol: bool = False) -> None:
    """How images are resized and fitted to the patch grid (``annofree segment`` and ``annofree evaluate``).

    Unset, they are ``None``: ``ZeroShotSegmenter``'s defaults apply (annofree's choices for photos), or with
    ``protocol`` the benchmark protocol's (the official GroupViT evaluation's)."""
    from annofree.evaluation.protocols import BENCHMARK_SETTINGS
    from annofree.inference.resize import RESIZE_METHODS
    from annofree.inference.zero_shot import PATCH_RULES

    def default(name: str) -> str:
        if protocol:
            return f"the protocol's, {getattr(BENCHMARK_SETTINGS, name)}"
        return f"the weights' {SETTINGS_NAME}, else {getattr(DEFAULTS, name) or 'none'}"

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


def segmenter_options(args: argparse.Namespace) -> dict[str, Any]:
    """The zero-shot settings given on the command line (``--short-side 0``: ``None``, keep the size); the
    others are left to the weights' settings file or the defaults. A one-line error for a bad value."""
    given = {name: getattr(args, name, None) for name in SETTING_OPTIONS}
    given = {name: value for name, value in given.items() if value is not None}
    if given.get("short_side", 0) < 0:
        raise UserError(f"--short-side must be 0 (keep) or positive, got {given['short_side']}")
    if "short_side" in given:
        given["short_side"] = given["short_side"] or None
    for name in ("window", "stride", "topk"):
        if given.get(name, 1) < 1:
            raise UserError(f"{SETTING_OPTIONS[name]} must be positive, got {given[name]}")
    given |= image_pipeline_options(args)
    return given  # checked with the weights' settings (--bg-thresh's range depends on the rule)


def zero_shot_settings(
    args: argparse.Namespace, model, base: ZeroShotSettings | None = None, base_source: str = DEFAULT_SOURCE
) -> tuple[ZeroShotSettings, list[str]]:
    """The settings to segment with: each option given on the command line, else the weights' stored settings
    (``model.inference_settings``), else ``base`` (the defaults); and the lines that say so (with a note for
    weights trained on synthetic scenes only)."""
    stored = getattr(model, "inference_settings", None)
    settings, sources = resolve_settings(
        stored, segmenter_options(args), given_source=COMMAND_LINE, base=base, base_source=base_source
    )
    synthetic = [f"note: {SYNTHETIC_NOTE}"] if stored is not None and stored.synthetic else []
    return settings, [describe_settings(settings, sources), *synthetic]


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
    settings, notes = zero_shot_settings(args, model)
    segmenter = ZeroShotSegmenter(model, class_names, settings)
    for same in segmenter.indistinguishable_classes():
        notes.append(f"note: these weights embed the classes {', '.join(same)} alike (words they never learned?): "
                     f"they cannot tell them apart, and {same[0]} wins wherever one of them does")  # fmt: skip
    out_dir = make_out_dir(args.out)
    for line in [] if getattr(args, "quiet", False) else notes:  # --quiet: errors only
        print(line, file=sys.stderr)

    def work(path: Path, name: str) -> str:
        image = load_image(path)
        result = segmenter.segment(image)
        write_outputs(out_dir, name, path, image, result, args.alpha)
        if getattr(args, "vis", "overlay") == "groups":
            write_group_maps(out_dir, name, model, image, segmenter.settings.short_side)
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in result.fractions().items() if v > 0)
        return f"{path} -> {out_dir / name}.png ({image.shape[1]}x{image.shape[0]}): {shares}"

    return process_images(files, errors, out_dir, work, quiet=getattr(args, "quiet", False))
