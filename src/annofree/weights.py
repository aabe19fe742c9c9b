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
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from annofree.errors import UserError
from annofree.folders import disk_error
from annofree.inference.settings import SETTINGS_NAME, StoredSettings, ZeroShotSettings, parse_stored_settings

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


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path`` in one step.

    A write that fails for a reason of the disk (full, read-only, no permission) raises a one-line
    :class:`~annofree.folders.DiskError` naming ``path``; ``path`` itself is never touched by a failed write.
    """
    path = Path(path)
    tmp, failure = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes 0600 files; give the usual mode instead
        os.replace(tmp, path)
    except Exception as exc:
        failure = disk_error(path, exc)  # before the partial file goes: it shows a disk that filled up
        if failure is None:
            raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    if failure is not None:  # raised outside the handler: the failed writer (and its open file) is freed now
        raise failure


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0666 minus the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    return 0o666 & ~process_umask()


def process_umask() -> int:
    """The process umask. Linux tells it in /proc; elsewhere the only way is to set it and put it back, which
    another thread creating a file in between would see, so that is the fallback only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


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
    """A run directory, a ``.safetensors`` file or a pretrained name -> the weights file; a clear error otherwise.

    A name (``groupvit-gcc-yfcc``, see :mod:`annofree.pretrained`) is downloaded, checked and converted on first use.
    """
    from annofree import pretrained

    if pretrained.is_pretrained_name(path):
        return pretrained.resolve(str(path))
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        names = ", ".join(sorted(pretrained.REGISTRY))
        raise UserError(f"{path}: no weights file (give a run directory, a .safetensors file or one of: {names})")
    return path


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
    """Load a deployable model (GroupViT, DenseSiam) from a run directory, weights file or pretrained name, in eval
    mode. ``load("groupvit-gcc-yfcc")`` downloads the published weights once (see :mod:`annofree.pretrained`).

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
