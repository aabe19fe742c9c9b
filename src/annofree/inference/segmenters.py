"""The one door from a loaded model to its segmenter: each method registers how to build it, callers dispatch once.

A model names its method (``model.method``: ``"groupvit"`` for a GroupViT or an ``OnnxGroupViT``,
``"densesiam"`` for a DenseSiam). :func:`segmenter_kind` finds what that method registered here, a
:class:`SegmenterKind`, and :func:`build_segmenter` builds the segmenter from the model and the options. Every
segmenter answers with the same :class:`annofree.inference.result.SegmentationResult` (:class:`Segmenter`), so
``annofree segment``, ``annofree evaluate`` and the app never ask which model they hold. A third method registers
its own kind (``register_segmenter``, in its module) and touches none of them.

Options are the zero-shot settings' fields (:class:`annofree.inference.settings.ZeroShotSettings`), given one by
one over the weights' stored settings; a kind reads those that apply to it (DenseSiam: ``short_side`` only).

Example:
    >>> segmenter = build_segmenter(annofree.load("runs/tiny"), ["circle", "star"], bg_thresh=0.5)  # doctest: +SKIP
    >>> segmenter.segment("photo.jpg").fractions()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from annofree.errors import UserError
from annofree.inference.clusters import DENSESIAM_SHORT_SIDE, ClusterSegmenter
from annofree.inference.pixels import ImageLike
from annofree.inference.result import SegmentationResult
from annofree.inference.settings import DEFAULTS, GIVEN_SOURCE, ZeroShotSettings
from annofree.inference.zero_shot import ZeroShotSegmenter


class Segmenter(Protocol):
    """What every segmenter offers."""

    labels: list[str]  # the name of each label id
    short_side: int | None  # the shorter side the model sees (None: the image's own)

    def segment(self, image: ImageLike) -> SegmentationResult: ...

    def segment_batch(self, images: Sequence[ImageLike]) -> list[SegmentationResult]: ...

    def notes(self) -> list[str]: ...  # what a command says before segmenting (settings, warnings)


# (model, class names or None, settings or None, how the options are named, options) -> segmenter
Builder = Callable[[Any, Sequence[str] | None, ZeroShotSettings | None, str, Mapping[str, Any]], Segmenter]


@dataclass(frozen=True)
class SegmenterKind:
    """How one method's models segment images."""

    name: str  # the method, as ``model.method`` names it
    title: str  # what its weights are called in messages ("GroupViT")
    build: Builder
    named_classes: bool  # True: the caller names the classes (zero-shot); False: the labels are the model's own
    short_side: int | None  # the shorter side the model sees unless told otherwise
    grouping_stages: bool = False  # its groups can be drawn (annofree.viz.grouping_stages)


SEGMENTERS: dict[str, SegmenterKind] = {}


def register_segmenter(kind: SegmenterKind) -> SegmenterKind:
    """Tell :func:`build_segmenter` how to segment with the models of ``kind.name`` (``model.method``)."""
    SEGMENTERS[kind.name] = kind
    return kind


def segmenter_kind(model: Any) -> SegmenterKind:
    """The kind registered for ``model.method``; a one-line error for a model no method registered."""
    kind = SEGMENTERS.get(getattr(model, "method", None))
    if kind is None:
        known = ", ".join(sorted(SEGMENTERS))
        raise UserError(f"a {type(model).__name__} has no segmenter (segmenters exist for: {known})")
    return kind


def build_segmenter(
    model: Any,
    class_names: Sequence[str] | None = None,
    settings: ZeroShotSettings | None = None,
    *,
    source: str = GIVEN_SOURCE,
    **options: Any,
) -> Segmenter:
    """The segmenter of ``model``: ``class_names`` for a kind that takes them; ``settings`` to start from instead of
    the weights' stored ones; ``options`` single settings over them, named ``source`` in the settings line."""
    return segmenter_kind(model).build(model, class_names, settings, source, options)


# ----------------------------------------------------------------------------- the built-in methods


def _zero_shot(model, class_names, settings, source, options) -> ZeroShotSegmenter:
    if class_names is None:
        raise UserError("zero-shot segmentation needs class names")
    return ZeroShotSegmenter(model, class_names, settings, source=source, **options)


def _clusters(model, class_names, settings, source, options) -> ClusterSegmenter:
    if class_names is not None:
        raise UserError("DenseSiam weights segment into unnamed clusters, not classes")
    return ClusterSegmenter(model, short_side=options.get("short_side", DENSESIAM_SHORT_SIDE))


register_segmenter(SegmenterKind("groupvit", "GroupViT", _zero_shot, True, DEFAULTS.short_side, grouping_stages=True))
register_segmenter(SegmenterKind("densesiam", "DenseSiam", _clusters, False, DENSESIAM_SHORT_SIDE))


__all__ = ["SEGMENTERS", "Segmenter", "SegmenterKind", "build_segmenter", "register_segmenter", "segmenter_kind"]
