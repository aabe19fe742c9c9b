"""The zero-shot segmenter's settings: one frozen record whose defaults are written here once, and the file in
which a run keeps the settings its weights were scored with.

:class:`ZeroShotSettings` says how :class:`annofree.inference.ZeroShotSegmenter` runs: the background rule and
threshold, whole image or sliding windows, the short side, the top-k filter, flip and the prompts. Its defaults
are the paper's rule and size on the whole image; the benchmark protocols (:mod:`annofree.evaluation.protocols`),
the app and the command line all start from them.

A run keeps the settings it was scored with in ``inference.json`` beside its weights (``annofree demo`` writes
one, and so does the packed demo checkpoint)::

    {"zero_shot": {"bg_rule": "similarity", "bg_thresh": 0.2, "short_side": 72, "flip": true},
     "synthetic": true}

``synthetic`` says that the weights learned from synthetic scenes only. ``annofree.load`` reads the file
(:func:`annofree.weights.read_stored_settings`) and attaches it to the model as ``model.inference_settings``;
the segmenter, the folder evaluation, the app and the CLI then resolve each option in turn
(:func:`resolve_settings`): the option given, else the weights' file, else the default here, and
:func:`describe_settings` says in one line which value came from where. Benchmark protocols keep their
published settings whatever the weights' file says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from annofree.errors import UserError
from annofree.inference.resize import RESIZE_METHODS

SETTINGS_NAME = "inference.json"  # beside model.safetensors in a run directory
BG_RULES = ("affinity", "similarity")  # what bg_thresh thresholds: the reference's affinity, or the cosine
MODES = ("whole", "slide")
PATCH_REMAINDERS = ("drop", "fit")  # the official patch convolution's, or resized to the patch grid
PROMPTS = ("single", "ensemble")  # "a photo of a {}.", or the average over 80 ImageNet templates
DEFAULT_SOURCE = "defaults"
GIVEN_SOURCE = "the arguments"  # options given in Python, as the settings line names them
SYNTHETIC_NOTE = "these weights were trained on synthetic scenes only; for photos use --weights groupvit-gcc-yfcc"


@dataclass(frozen=True)
class CommandLineOption:
    """How a setting appears on the command line (the command line makes one option of each)."""

    help: str  # "{default}" marks where --help says where an unset value comes from
    kind: type | None = None  # the value's type when the default does not show it (None)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    zero_means: str | None = None  # 0 on the command line stands for None, which means this ("keep", "no cap")
    positive: bool = False  # at least 1
    group: str = "inference"  # "inference": segment, evaluate and app; "image": the image pipeline of the first two


def setting(default: Any, help: str, **command_line: Any) -> Any:
    """A field of :class:`ZeroShotSettings`: its default, written here once, and its command-line option."""
    return field(default=default, metadata={"command_line": CommandLineOption(help, **command_line)})


@dataclass(frozen=True)
class ZeroShotSettings:
    """How the zero-shot segmenter runs; every field is checked when the record is made (a one-line error).

    Attributes:
        bg_thresh: background threshold (reference: VOC 0.95, Context 0.35, COCO-Object 0.95): an affinity in
            [0, 1] with ``bg_rule="affinity"``, a cosine similarity in [-1, 1] with ``bg_rule="similarity"``.
        bg_rule: ``"affinity"`` (the reference) or ``"similarity"`` (see :mod:`annofree.inference.zero_shot`).
        mode: ``"whole"`` (one pass over the image) or ``"slide"`` (windows of ``window`` every ``stride``).
        window, stride: the sliding windows, in pixels (an int, or ``(height, width)``).
        short_side: resize the shorter side to this before inference (``None``, or 0 which becomes ``None``:
            keep the size).
        topk: classes kept by the image-level filter (``None``: all).
        flip: also segment the mirrored image and average the two logits (test-time augmentation, as mmseg's
            ``flip=True``; not in the paper's protocol; twice the work).
        prompts: ``"single"`` ("a photo of a {}.") or ``"ensemble"`` (80 ImageNet templates averaged).
        max_long_side: with ``short_side``, scale less where the long side would pass this (the official
            protocol's 2048; ``None``: no cap).
        resize: ``"antialias"`` (floating-point bilinear, antialiased when shrinking, for photos) or
            ``"official"`` (the official evaluation's: OpenCV's bilinear on the 8-bit image, no antialiasing;
            ``annofree.inference.resize``).
        patch_remainder: a crop side that is not a multiple of the patch size: ``"fit"`` (the crop is resized to
            the nearest multiple, every pixel counts) or ``"drop"`` (the official: the patch convolution drops
            the right and bottom remainder, the grouping maps are stretched over the crop).
    """

    bg_thresh: float = setting(
        0.95,
        "pixels whose best class score is below this (or below the best group score) are background (reference: "
        "VOC 0.95, Context 0.35; {default}); with --bg-rule similarity a cosine, e.g. 0.2",
        kind=float,
    )
    bg_rule: str = setting(
        "affinity",
        "what --bg-thresh thresholds: the reference's group-class affinity (a softmax over the classes), or the "
        "cosine similarity, for models trained with the sigmoid multi-label loss ({default})",
        choices=BG_RULES,
    )
    mode: str = setting(
        "whole", "one pass over the whole image, or sliding windows (the paper's protocol; {default})", choices=MODES
    )
    window: int | tuple[int, int] = setting(448, "sliding window size in pixels ({default})", positive=True)
    stride: int | tuple[int, int] = setting(224, "sliding window stride in pixels ({default})", positive=True)
    short_side: int | None = setting(
        448,
        "resize the shorter image side to N before inference, 0 to keep the size; results are always at the input's "
        "size (GroupViT {default}; {other kinds})",
        metavar="N",
        zero_means="keep",
    )
    topk: int | None = setting(5, "classes kept by the image-level filter ({default})", positive=True)
    flip: bool = setting(
        False,
        "also segment the mirrored image and average the two (test-time augmentation; twice the work; {default})",
    )
    prompts: str = setting(
        "single", "'a photo of a {}.' or the average over 80 ImageNet prompt templates ({default})", choices=PROMPTS
    )
    max_long_side: int | None = setting(
        None,
        "scale the image less where its long side would pass N, 0 for no cap (the official evaluation caps at 2048) "
        "(default: {default})",
        kind=int,
        metavar="N",
        zero_means="no cap",
        group="image",
    )
    resize: str = setting(
        "antialias",
        "how the image is resized to --short-side: 'antialias' (antialiased when shrinking, better for photos) or "
        "'official' (as the official GroupViT evaluation: OpenCV's bilinear on the 8-bit image, no antialiasing; "
        "the benchmarks' default) (default: {default})",
        choices=RESIZE_METHODS,
        group="image",
    )
    patch_remainder: str = setting(
        "fit",
        "sides that are not a multiple of the patch size: 'fit' resizes the crop to the nearest multiple (every pixel "
        "counts) or 'drop' drops the right and bottom remainder, as the official GroupViT code does "
        "(default: {default})",
        choices=PATCH_REMAINDERS,
        group="image",
    )
    # A new segmenter option is one more field here, made with setting(): its default, its command-line option
    # (--name-with-dashes, in `annofree segment`, `evaluate` and `app`) and its help, once; every caller, the
    # benchmark protocols and inference.json then know it. Its check goes in __post_init__.

    def __post_init__(self) -> None:
        check_background(self.bg_rule, self.bg_thresh)
        object.__setattr__(self, "bg_thresh", float(self.bg_thresh))  # 1 from a JSON file is 1.0
        _check_choice("mode", self.mode, MODES, "unknown inference mode")
        _check_choice("prompts", self.prompts, PROMPTS, "unknown prompts")
        for name in ("window", "stride"):
            _check_size(name, getattr(self, name))
        object.__setattr__(self, "short_side", check_short_side(self.short_side))  # 0 keeps the size: None
        if self.topk is not None and (isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1):
            raise UserError(f"topk must be at least 1 (or None), got {self.topk!r}")
        check_image_options(self.max_long_side, self.resize, self.patch_remainder)
        if not isinstance(self.flip, bool):
            raise UserError(f"flip must be true or false, got {self.flip!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def command_line(cls) -> dict[str, CommandLineOption]:
        """Each setting's command-line option, in field order (the option is ``--`` + the name with dashes)."""
        return {f.name: f.metadata["command_line"] for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: ZeroShotSettings | None = None) -> ZeroShotSettings:
        """``base`` (default: the defaults) with ``values`` on top; a one-line error for an unknown key."""
        check_keys(values)
        values = {k: tuple(v) if k in ("window", "stride") and isinstance(v, list) else v for k, v in values.items()}
        return replace(base or cls(), **values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (window and stride pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def template(self) -> list[str]:
        """The prompt templates of ``prompts``."""
        from annofree.data.captions import PROMPT_TEMPLATES, SEGMENTATION_TEMPLATE

        return list(PROMPT_TEMPLATES) if self.prompts == "ensemble" else [SEGMENTATION_TEMPLATE]


def check_background(bg_rule: str, bg_thresh: float) -> None:
    """A ``UserError`` for an unknown rule, or a threshold outside its rule's range."""
    if bg_rule not in BG_RULES:
        raise UserError(f"unknown background rule {bg_rule!r} (use one of {', '.join(BG_RULES)})")
    if isinstance(bg_thresh, bool) or not isinstance(bg_thresh, int | float):
        raise UserError(f"bg_thresh must be a number, got {bg_thresh!r}")
    low = -1.0 if bg_rule == "similarity" else 0.0
    if not low <= float(bg_thresh) <= 1.0:
        raise UserError(f"bg_thresh must lie in [{low:g}, 1] with the {bg_rule} rule, got {bg_thresh}")


def check_short_side(short_side: int | None) -> int | None:
    """The shorter side to resize to, or ``None`` to keep the image's size (given as 0, or ``None``)."""
    if short_side is None or short_side == 0:
        return None
    if isinstance(short_side, bool) or not isinstance(short_side, int | np.integer) or short_side < 0:
        raise UserError(f"short_side must be a positive number of pixels, or 0 to keep the size; got {short_side!r}")
    return int(short_side)


def check_image_options(max_long_side: int | None, resize: str, patch_remainder: str) -> None:
    """A ``UserError`` for a bad long-side cap, an unknown resize method or an unknown patch remainder rule."""
    if max_long_side is not None and (isinstance(max_long_side, bool) or not isinstance(max_long_side, int)
                                      or max_long_side < 1):  # fmt: skip
        raise UserError(f"max_long_side must be positive (or None), got {max_long_side!r}")
    if resize not in RESIZE_METHODS:
        raise UserError(f"unknown resize method {resize!r} (use one of {', '.join(RESIZE_METHODS)})")
    if patch_remainder not in PATCH_REMAINDERS:
        raise UserError(f"unknown patch remainder rule {patch_remainder!r} (use one of {', '.join(PATCH_REMAINDERS)})")


def _check_choice(name: str, value: Any, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise UserError(f"{what} {value!r} (use one of {', '.join(choices)})")


def _check_size(name: str, value: Any) -> None:
    parts = value if isinstance(value, tuple) and len(value) == 2 else (value,)
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in parts):
        raise UserError(f"{name} must be a positive number of pixels (or a pair of them), got {value!r}")


def check_keys(values: Mapping[str, Any]) -> None:
    """A one-line error naming the first key that is not a setting."""
    known = ZeroShotSettings.field_names()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown zero-shot setting {unknown[0]!r} (known: {', '.join(known)})")


DEFAULTS = ZeroShotSettings()


# ----------------------------------------------------------------------------- the file beside the weights


@dataclass(frozen=True)
class StoredSettings:
    """What a run's ``inference.json`` says: the settings it gives (checked), and how the weights were trained."""

    values: Mapping[str, Any]  # the settings the file gives; the others keep their defaults
    synthetic: bool = False  # trained on synthetic scenes only
    path: str = SETTINGS_NAME  # where they were read, to say so

    def settings(self) -> ZeroShotSettings:
        return ZeroShotSettings.from_dict(self.values)

    def to_json(self) -> str:
        return json.dumps({"zero_shot": dict(self.values), "synthetic": self.synthetic}, indent=2) + "\n"


def parse_stored_settings(text: str, where: str) -> StoredSettings:
    """The settings file's text -> ``StoredSettings``; a one-line error naming ``where`` and the bad key."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("zero_shot", {}), dict):
        raise UserError(f'{where}: expected {{"zero_shot": {{...settings...}}, "synthetic": false}}')
    unknown = sorted(set(record) - {"zero_shot", "synthetic"})
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: zero_shot, synthetic)")
    values = dict(record.get("zero_shot", {}))
    synthetic = record.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise UserError(f"{where}: synthetic must be true or false, got {synthetic!r}")
    try:
        ZeroShotSettings.from_dict(values)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return StoredSettings(values, synthetic, where)


# ----------------------------------------------------------------------------- resolving and saying so


def resolve_settings(
    stored: StoredSettings | None = None,
    given: Mapping[str, Any] | None = None,
    given_source: str = GIVEN_SOURCE,
    base: ZeroShotSettings | None = None,
    base_source: str = DEFAULT_SOURCE,
) -> tuple[ZeroShotSettings, dict[str, str]]:
    """Each option from ``given``, else from ``stored`` (the weights' file), else from ``base`` (the defaults).

    Returns the settings and, per field, where its value came from (``given_source``, the file's path or
    ``base_source``). A one-line error for an unknown option or a bad value.
    """
    given = dict(given or {})
    check_keys(given)
    stored_values = dict(stored.values) if stored is not None else {}
    settings = ZeroShotSettings.from_dict({**stored_values, **given}, base=base)
    sources = {}
    for name in ZeroShotSettings.field_names():
        if name in given:
            sources[name] = given_source
        elif name in stored_values:
            sources[name] = stored.path
        else:
            sources[name] = base_source
    return settings, sources


def _shown(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{name}={'on' if value else 'off'}"
    if isinstance(value, tuple):
        return f"{name}={value[0]}x{value[1]}"
    if value is None:
        return f"{name}={ {'short_side': 'keep', 'topk': 'all'}.get(name, 'none') }"
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def describe_settings(settings: ZeroShotSettings, sources: Mapping[str, str]) -> str:
    """One line: each setting's value grouped by where it came from (window and stride only when sliding)."""
    groups: dict[str, list[str]] = {}
    for name in ZeroShotSettings.field_names():
        if name in ("window", "stride") and settings.mode != "slide":
            continue
        groups.setdefault(sources.get(name, DEFAULT_SOURCE), []).append(_shown(name, getattr(settings, name)))
    said = [
        f"{source if source == DEFAULT_SOURCE else 'from ' + source}: {' '.join(shown)}"
        for source, shown in groups.items()
    ]
    return "zero-shot settings -- " + "; ".join(said)


def settings_notes(
    settings: ZeroShotSettings, sources: Mapping[str, str], stored: StoredSettings | None = None
) -> list[str]:
    """The lines a command or the app says first: the settings line, and a note when the weights' file says they
    learned from synthetic scenes only."""
    synthetic = [f"note: {SYNTHETIC_NOTE}"] if stored is not None and stored.synthetic else []
    return [describe_settings(settings, sources), *synthetic]


def differences(settings: ZeroShotSettings, stored: StoredSettings | None) -> dict[str, Any]:
    """The stored values that differ from ``settings`` (empty without a file)."""
    if stored is None:
        return {}
    wanted = stored.settings()
    return {k: getattr(wanted, k) for k in stored.values if getattr(wanted, k) != getattr(settings, k)}


__all__ = [
    "BG_RULES",
    "DEFAULTS",
    "DEFAULT_SOURCE",
    "GIVEN_SOURCE",
    "MODES",
    "PROMPTS",
    "SETTINGS_NAME",
    "SYNTHETIC_NOTE",
    "StoredSettings",
    "ZeroShotSettings",
    "check_background",
    "check_image_options",
    "check_short_side",
    "describe_settings",
    "differences",
    "parse_stored_settings",
    "resolve_settings",
    "settings_notes",
]
