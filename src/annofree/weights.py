"""The weights format: one safetensors file holding a deployable model and the config that rebuilds it.

``model.safetensors`` carries, in its metadata, the method name (``annofree.method``) and the model
config as JSON (``annofree.config``), so a single file is enough to rebuild the model. Files are written
atomically (temporary file, fsync, rename): a crash never leaves a half-written file in place.

Beside the weights, ``inference.json`` (``NAME.inference.json`` beside another ``NAME.safetensors``) keeps the
zero-shot segmenter's settings that the weights were scored with (:mod:`annofree.inference.settings`);
``load`` attaches them to the model as ``model.inference_settings`` (``None`` when there is no such file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from annofree.errors import UserError
from annofree.inference.settings import SETTINGS_NAME, StoredSettings, ZeroShotSettings, parse_stored_settings
from annofree.io import atomic_write

WEIGHTS_NAME = "model.safetensors"
_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}


def register_model(method: str, builder: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Tell ``load`` how to rebuild the deployable model of ``method`` from its config dict."""
    _BUILDERS[method] = builder


def _build_groupvit(config: dict[str, Any]) -> nn.Module:
    from annofree.models import GroupViT, GroupViTConfig

    return GroupViT(GroupViTConfig.from_dict(config))


def _build_densesiam(config: dict[str, Any]) -> nn.Module:
    from annofree.models.densesiam import DenseSiam, DenseSiamConfig

    return DenseSiam(DenseSiamConfig.from_dict(config))


register_model("groupvit", _build_groupvit)
register_model("densesiam", _build_densesiam)


def save_weights(
    path: str | Path,
    model: nn.Module,
    method: str,
    config: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``model``'s state dict with the method name and model config in the metadata."""
    return save_state(path, model.state_dict(), method, config, extra)


def save_state(
    path: str | Path,
    state: dict[str, torch.Tensor],
    method: str,
    config: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write a state dict as ``save_weights`` does (``path``: a ``.safetensors`` file or a directory)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / WEIGHTS_NAME
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    metadata = {"annofree.method": method, "annofree.config": json.dumps(config), **(extra or {})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return path


def resolve_weights_path(path: str | Path) -> Path:
    """A run directory or a ``.safetensors`` file -> the weights file; a one-line error when there is none.

    Named pretrained weights (``groupvit-gcc-yfcc``) are resolved above this module, by
    :func:`annofree.pretrained.weights_path`, which ``annofree.load`` and every ``--weights`` option use.
    """
    path = weights_file(path)
    if not path.is_file():
        raise UserError(f"{path}: no weights file (give a run directory or a .safetensors file)")
    return path


def weights_file(path: str | Path) -> Path:
    """Where the weights of ``path`` lie: ``path/model.safetensors`` for a directory, else ``path`` (unchecked)."""
    path = Path(path)
    return path / WEIGHTS_NAME if path.is_dir() else path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """-> (state dict, method name, model config). Never unpickles anything."""
    path = resolve_weights_path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors weights file ({exc})") from None
    method = metadata.get("annofree.method")
    if method is None or "annofree.config" not in metadata:
        raise UserError(f"{path}: safetensors file without annofree metadata (convert it with `annofree convert`)")
    return state, method, json.loads(metadata["annofree.config"])


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a deployable model (GroupViT, DenseSiam) from a run directory or weights file, in eval mode
    (``annofree.load`` also takes a pretrained name: :func:`annofree.pretrained.load`).

    ``model.inference_settings`` holds the settings stored beside the weights (``read_stored_settings``), which
    ``ZeroShotSegmenter`` starts from; ``None`` when there are none (pretrained names: the paper's settings)."""
    state, method, config = read_weights(path)
    if method not in _BUILDERS:
        raise UserError(f"{path}: weights of unknown method {method!r}")
    model = _BUILDERS[method](config)
    _load_state(model, state, f"{path}: weights do not match the stored {method} config")
    model.inference_settings = read_stored_settings(resolve_weights_path(path))
    return model.to(device).eval()


def settings_path(weights: str | Path) -> Path:
    """Where the settings of ``weights`` (a run directory or a weights file) lie: ``inference.json`` beside
    ``model.safetensors``, ``NAME.inference.json`` beside any other ``NAME.safetensors``."""
    path = Path(weights)
    if path.is_dir():
        return path / SETTINGS_NAME
    if path.name == WEIGHTS_NAME:
        return path.parent / SETTINGS_NAME
    return path.with_name(f"{path.stem}.{SETTINGS_NAME}")


def read_stored_settings(weights: str | Path) -> StoredSettings | None:
    """The settings stored with ``weights`` (a run directory or weights file), or ``None`` when it has none;
    a one-line error for a file that is unreadable or names an unknown setting."""
    path = settings_path(weights)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the weights' settings ({exc})") from None
    return parse_stored_settings(text, str(path))


def write_stored_settings(
    weights: str | Path, settings: ZeroShotSettings | dict[str, Any], synthetic: bool = False
) -> Path:
    """Write the settings that ``weights`` (a run directory or weights file) were scored with beside them,
    atomically, and whether they were trained on synthetic scenes only; returns the file."""
    values = settings.to_dict() if isinstance(settings, ZeroShotSettings) else dict(settings)
    text = StoredSettings(values, synthetic).to_json()
    parse_stored_settings(text, "settings")  # checked before anything is written
    path = settings_path(weights)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def load_into(model: nn.Module, path: str | Path, method: str) -> None:
    """Copy the weights at ``path`` into ``model`` (the same architecture), e.g. to fine-tune from them."""
    state, stored, _ = read_weights(path)
    if stored != method:
        raise UserError(f"{path}: {stored} weights, but this is a {method} model")
    _load_state(model, state, f"{path}: weights do not fit this {method} model (compare the model configs)")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], message: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{message} ({str(exc).splitlines()[0]})") from None
