"""Read PyTorch ``.pth`` files without running any code they carry.

A ``.pth`` file is a pickle, and a pickle can call any function while it loads (``os.system`` included).
``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; it refuses every other
global. Released checkpoints often also pickle a few data-only objects beside the weights (the official
GroupViT files keep their OmegaConf training config, ``collections.defaultdict`` metrics, NumPy scalars).
Refusing those would refuse the release itself, so names from a short list of data-only modules are
replaced by :class:`Inert`, a placeholder that records its arguments and runs nothing. Any other global
is refused before unpickling starts, with an error that names it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from annofree.errors import UserError

# Modules whose objects only carry data. Their classes are never imported: each name becomes Inert.
_DATA_ONLY_MODULES = ("omegaconf", "numpy", "typing", "argparse", "collections", "pathlib")
_DATA_ONLY_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "bytes", "slice"}


class Inert:
    """Stands in for a data-only class of a pickle: keeps what the pickle passes, executes nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Inert(args={self.args!r}, state={self.state!r})"


def plain_data(obj: Any) -> Any:
    """Plain dicts, lists and values from a loaded object tree; OmegaConf nodes (``Inert`` with ``_content`` or
    ``_val``) are unwrapped, other placeholders become ``None``. Used to read a config pickled beside weights.
    """
    if isinstance(obj, Inert):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "_content" in state:
            return plain_data(state["_content"])
        return plain_data(state.get("_val"))
    if isinstance(obj, dict):
        return {key: plain_data(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(value) for value in obj]
    return obj


def _plain_dict(*args: Any) -> dict:
    """``collections.defaultdict`` read as a plain dict (the unpickler fills only exact dicts)."""
    return {}


_REPLACEMENTS = {"collections.defaultdict": _plain_dict}


def _is_data_only(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if module == "builtins":
        return attr in _DATA_ONLY_BUILTINS
    return module.split(".")[0] in _DATA_ONLY_MODULES


def unsafe_globals(path: str | Path) -> list[str]:
    """The globals a checkpoint needs beyond tensors and plain containers (read without unpickling)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None


def load_pth(path: str | Path) -> Any:
    """Load a ``.pth`` file with weights-only unpickling; ``UserError`` if it would run code or is unreadable.

    Only the zip format that ``torch.save`` has written since PyTorch 1.6 is read; the older format cannot be
    checked before it runs, so it is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path}: not a zip-format PyTorch checkpoint (legacy pickles cannot be checked before they run, so "
            "annofree does not open them; re-save it with torch.save in PyTorch >= 1.6)"
        )
    names = unsafe_globals(path)
    code = [name for name in names if not _is_data_only(name)]
    if code:
        raise UserError(
            f"{path}: refused: loading it would call {', '.join(sorted(code))}; annofree reads only tensors and "
            "plain data from a checkpoint and never runs its code (weights-only loading)"
        )
    try:
        with torch.serialization.safe_globals([(_REPLACEMENTS.get(name, Inert), name) for name in names]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means a bad file: named in one line
        raise UserError(f"{path}: cannot load this checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["Inert", "load_pth", "plain_data", "unsafe_globals"]
