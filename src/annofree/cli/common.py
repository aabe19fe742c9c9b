"""What the commands that segment share (``segment``, ``evaluate``, ``app``): the zero-shot options and how they
are read, the device, the model, the output folder and the loop over input files.

The command line's one module of shared helpers: the subcommands import from here, never from one another (the
DenseSiam side, :mod:`annofree.cli.clusters`, is imported by ``segment`` and ``evaluate`` only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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


@dataclass(frozen=True)
class ImageFile:
    """An input image and its output name: the file's stem, under its sub-path inside a folder given."""

    path: Path
    name: str


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


# ----------------------------------------------------------------------------- scores (evaluate)


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def format_table(results: dict[str, Any]) -> str:
    """A short text table: per-class IoU, then mIoU and accuracies (in percent)."""
    width = max([len("pixel accuracy"), *(len(name) for name in results["per_class_iou"])])
    lines = [f"{'class':<{width}}  IoU %"]
    lines += [f"{name:<{width}}  {_percent(iou)}" for name, iou in results["per_class_iou"].items()]
    lines.append("-" * (width + 8))
    lines.append(f"{'mIoU':<{width}}  {_percent(results['miou'])}")
    lines.append(f"{'pixel accuracy':<{width}}  {_percent(results['pixel_accuracy'])}")
    lines.append(f"{'mean accuracy':<{width}}  {_percent(results['mean_accuracy'])}")
    lines.append(f"({results['num_images']} images, {results['num_pixels']} labelled pixels)")
    objects = results.get("without_background")
    if objects:
        lines.append(
            f"without background: mIoU {_percent(objects['miou']).strip()} %, "
            f"pixel accuracy {_percent(objects['pixel_accuracy']).strip()} %"
        )
    if results.get("skipped"):
        lines.append(f"({results['skipped']} unreadable samples skipped)")
    return "\n".join(lines)


def write_json(out: Path, record: dict[str, Any]) -> None:
    """``out`` as JSON and ``out`` with ``.md`` as a Markdown report."""
    from annofree.evaluation.reports import write_report

    write_report(out, record, title=f"Evaluation of {record.get('weights', 'a model')}")
