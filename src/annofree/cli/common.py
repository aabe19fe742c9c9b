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
    DEFAULT_SOURCE,
    DEFAULTS,
    SETTINGS_NAME,
    CommandLineOption,
    ZeroShotSettings,
    resolve_settings,
    settings_notes,
)

# ----------------------------------------------------------------------------- the zero-shot options


COMMAND_LINE = "the command line"  # the source of the options given there, in the settings line


def flag(name: str) -> str:
    """The command-line option of a ``ZeroShotSettings`` field: ``short_side`` -> ``--short-side``."""
    return "--" + name.replace("_", "-")


def _shown(value: Any, zero_means: str | None) -> str:
    return "on" if value is True else "off" if value is False else (zero_means or "none") if value is None else value


def _default(name: str, option: CommandLineOption, protocol: bool) -> str:
    """Where an unset option's value comes from, for --help (the value itself is ZeroShotSettings's)."""
    shown = _shown(getattr(DEFAULTS, name), option.zero_means)
    weights = f"the weights' {SETTINGS_NAME}, else {shown}"
    if option.group == "image":
        from annofree.evaluation.protocols import BENCHMARK_SETTINGS

        return f"the protocol's, {getattr(BENCHMARK_SETTINGS, name)}" if protocol else weights
    return f"default: the benchmark's protocol; with --data {weights}" if protocol else f"default: {weights}"


def _other_kinds(protocol: bool) -> str:
    """--short-side's help: the default of the segmenters that do not read ZeroShotSettings (DenseSiam's 320)."""
    from annofree.inference.segmenters import SEGMENTERS

    where = " on a benchmark, the folder's size with --data" if protocol else ", the {} protocol's"
    return "; ".join(
        f"{kind.title} default: {kind.short_side}{where.format(kind.title)}"
        for kind in SEGMENTERS.values()
        if not kind.named_classes
    )


def _add_setting(parser: argparse.ArgumentParser, name: str, option: CommandLineOption, protocol: bool) -> None:
    """One ZeroShotSettings field as an option; unset it is None (the weights' file or the defaults decide)."""
    default = getattr(DEFAULTS, name)
    text = option.help.replace("{default}", _default(name, option, protocol))
    text = text.replace("{other kinds}", _other_kinds(protocol))
    if isinstance(default, bool):
        parser.add_argument(flag(name), action=argparse.BooleanOptionalAction, default=None, help=text)
    elif option.choices is not None:
        parser.add_argument(flag(name), choices=list(option.choices), default=None, help=text)
    else:
        kind = option.kind or type(default)
        parser.add_argument(flag(name), type=kind, default=None, metavar=option.metavar, help=text)


def add_inference_options(parser: argparse.ArgumentParser, onnx: bool = False, protocol: bool = False) -> None:
    """Options of the zero-shot segmenter (also used by ``annofree evaluate`` and ``annofree app``), one per
    ``ZeroShotSettings`` field of the "inference" group, with the help its field gives; DenseSiam reads only
    ``--weights``, ``--short-side`` and ``--device``. With ``onnx``, ``--onnx DIR`` may replace ``--weights``
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
    for name, option in ZeroShotSettings.command_line().items():
        if option.group == "inference":
            _add_setting(parser, name, option, protocol)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def add_image_pipeline_options(parser: argparse.ArgumentParser, protocol: bool = False) -> None:
    """How images are resized and fitted to the patch grid (``annofree segment`` and ``annofree evaluate``): the
    ``ZeroShotSettings`` fields of the "image" group.

    Unset, they are ``None``: ``ZeroShotSegmenter``'s defaults apply (annofree's choices for photos), or with
    ``protocol`` the benchmark protocol's (the official GroupViT evaluation's)."""
    for name, option in ZeroShotSettings.command_line().items():
        if option.group == "image":
            _add_setting(parser, name, option, protocol)


def segmenter_options(args: argparse.Namespace) -> dict[str, Any]:
    """The zero-shot settings given on the command line, as ``ZeroShotSettings`` values (0 for an option that
    takes it, e.g. ``--short-side 0``: ``None``); the others are left to the weights' settings file or the
    defaults. A one-line error for a value out of the command line's range."""
    given = {}
    for name, option in ZeroShotSettings.command_line().items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if option.zero_means is not None:
            if value < 0:
                raise UserError(f"{flag(name)} must be 0 ({option.zero_means}) or positive, got {value}")
            value = value or None
        elif option.positive and value < 1:
            raise UserError(f"{flag(name)} must be positive, got {value}")
        given[name] = value
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
    return settings, settings_notes(settings, sources, stored)


def load_segmentation_model(args: argparse.Namespace):
    """The model of ``--weights`` (GroupViT, DenseSiam) on ``--device``, or of ``--onnx`` (an ``OnnxGroupViT``)."""
    if getattr(args, "onnx", None) is not None:
        return load_onnx(args.onnx, args.device)
    return load_model(args.weights, resolve_device(args.device))


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
    """A deployable model (GroupViT, DenseSiam) from a weights name or path; ``build_segmenter`` picks its segmenter."""
    from annofree.pretrained import load

    return load(weights, device=device)


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
