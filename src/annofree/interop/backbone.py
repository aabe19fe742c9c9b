"""Export a DenseSiam's ResNet backbone for the usual detection and segmentation code bases, and start one
from a torchvision ResNet file (:func:`load_backbone_weights`, the config's ``model.backbone_weights``).

The backbone already carries torchvision's names (:mod:`annofree.models.resnet`); the formats differ in
naming and container only. Every tensor of the backbone's ``state_dict`` is written, BN statistics and
``num_batches_tracked`` included, and nothing else (no FPN, no heads, no ``fc``).

============  ==========================================================================================
format        file
============  ==========================================================================================
torchvision   ``torch.save`` of the plain state_dict, torchvision names (``conv1.weight``,
              ``layer1.0.bn1.running_mean``, ...): ``torchvision.models.resnet50().load_state_dict(sd,
              strict=False)`` (strict fails only on the missing ``fc.*``)
detectron2    a pickle ``{"model": {name: numpy array}, "__author__": "annofree", "matching_heuristics":
              True}`` with detectron2's names, renamed as detectron2's ``tools/convert-torchvision-to-d2.py``
              does: non-stage keys under ``stem.``, ``layerN`` -> ``res{N+1}``, ``bnK`` -> ``convK.norm``,
              ``downsample.0`` -> ``shortcut``, ``downsample.1`` -> ``shortcut.norm``. The file name must end
              in ``.pkl`` (detectron2 reads other names with ``torch.load``). Config: ``MODEL.WEIGHTS``, the
              model's pixel mean/std times 255, ``INPUT.FORMAT: RGB``, ``RESNETS.STRIDE_IN_1X1: False``
              (torchvision v1.5 blocks), ``RESNETS.DEPTH`` and, for ResNet-18, ``RES2_OUT_CHANNELS: 64``
              (:func:`detectron2_config_hint`)
mmdet         ``torch.save`` of ``{"state_dict": {"backbone." + torchvision name: tensor}}``: mmdet's
              ``ResNet`` uses torchvision's names; load with ``load_from`` or the backbone's
              ``init_cfg=dict(type="Pretrained", prefix="backbone.", checkpoint=FILE)``
============  ==========================================================================================
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annofree.errors import UserError

FORMATS = ("torchvision", "detectron2", "mmdet")
MMDET_PREFIX = "backbone."


def backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The DenseSiam's ResNet ``state_dict`` with torchvision's names, on the CPU."""
    from annofree.models.densesiam import DenseSiam

    if not isinstance(model, DenseSiam):
        raise UserError(f"backbone export needs DenseSiam weights, not {type(model).__name__}")
    return {name: t.detach().to("cpu").contiguous() for name, t in model.backbone.state_dict().items()}


def detectron2_name(name: str) -> str:
    """torchvision ResNet name -> detectron2's, e.g. ``layer1.0.downsample.1.weight`` ->
    ``res2.0.shortcut.norm.weight`` and ``bn1.bias`` -> ``stem.conv1.norm.bias``."""
    stage = re.match(r"layer([1-4])\.", name)
    name = f"res{int(stage[1]) + 1}.{name[len(stage[0]) :]}" if stage else f"stem.{name}"
    name = re.sub(r"(^|\.)bn([1-3])\.", r"\1conv\2.norm.", name)
    return name.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")


def to_format(state: dict[str, torch.Tensor], fmt: str) -> dict[str, Any]:
    """The object written for ``fmt`` (module docstring), from a torchvision-named state_dict."""
    if fmt == "torchvision":
        return dict(state)
    if fmt == "detectron2":
        model = {detectron2_name(k): v.numpy() for k, v in state.items()}
        return {"model": model, "__author__": "annofree", "matching_heuristics": True}
    if fmt == "mmdet":
        return {"state_dict": {MMDET_PREFIX + k: v for k, v in state.items()}}
    raise UserError(f"unknown backbone format {fmt!r} (choose from {', '.join(FORMATS)})")


def export_backbone(model: nn.Module, fmt: str, out: str | Path) -> Path:
    """Write ``model``'s backbone to ``out`` in ``fmt``; returns the path. Written atomically."""
    from annofree.io import atomic_write

    out = Path(out)
    if fmt == "detectron2" and out.suffix != ".pkl":
        raise UserError(f"--out {out}: detectron2 reads pickled weights only from a .pkl file name")
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory (give a file name)")
    obj = to_format(backbone_state_dict(model), fmt)
    write = _write_pickle if fmt == "detectron2" else torch.save
    try:
        atomic_write(out, lambda tmp: write(obj, tmp))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    return out


def _write_pickle(obj: dict[str, Any], path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def detectron2_config_hint(model: nn.Module, weights: str | Path) -> str:
    """The detectron2 config lines that match the exported backbone (input format and normalisation)."""
    cfg = model.config
    mean = ", ".join(f"{255 * v:.3f}" for v in cfg.pixel_mean)
    std = ", ".join(f"{255 * v:.3f}" for v in cfg.pixel_std)
    depth = cfg.backbone.removeprefix("resnet")
    lines = [
        f"MODEL.WEIGHTS: {weights}",
        f"MODEL.PIXEL_MEAN: [{mean}]",
        f"MODEL.PIXEL_STD: [{std}]",
        f"MODEL.RESNETS.DEPTH: {depth}",
        "MODEL.RESNETS.STRIDE_IN_1X1: False",
        "INPUT.FORMAT: RGB",
    ]
    if int(depth) < 50:
        lines.append("MODEL.RESNETS.RES2_OUT_CHANNELS: 64")
    return "\n".join(lines)


SHOWN = 3  # mismatched names shown per kind in an error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` file read without running code: ``.safetensors``, or a ``torch.save`` pickle through
    ``torch.load(weights_only=True)`` (tensors and plain containers only; a pickle that would call anything
    else is refused before it runs). Any problem is a one-line ``UserError`` naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: refused, it is not a plain weights file (weights-only loading: {reason})") from None
    except Exception as exc:  # a torn or foreign file: torch and safetensors raise many kinds
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{path}: cannot read weights ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict (expected {{name: tensor}}, got {type(state).__name__})")
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a torchvision-format ResNet ``state_dict`` file (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``,
    ...) into ``backbone`` (an :class:`annofree.models.resnet.ResNet`, which has torchvision's names).

    ``fc.*`` is ignored (an ImageNet classifier's head); a missing ``num_batches_tracked`` keeps the model's
    (older torchvision files lack it). Every other name must be present in both with the same shape, or a
    one-line ``UserError`` lists what does not fit (the first few names of each kind and their counts).
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
        if wrong:
            shapes = [f"{k} {list(state[k].shape)} for {list(own[k].shape)}" for k in wrong]
            parts.append(f"{len(wrong)} of the wrong shape ({_first(shapes)})")
        arch = type(backbone).__name__
        raise UserError(f"{path}: does not fit this {arch} backbone (torchvision names expected): {'; '.join(parts)}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def _first(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


__all__ = [
    "FORMATS",
    "backbone_state_dict",
    "detectron2_config_hint",
    "detectron2_name",
    "export_backbone",
    "load_backbone_weights",
    "read_state_dict",
]
