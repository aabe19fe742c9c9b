"""What a run directory holds, and how a run saves and resumes exactly.

``OUT/model.safetensors``
    The method's deployable model (``annofree.load`` reads it), with the method name, model config
    and the step (``annofree.step``) in its metadata.
``OUT/config.yaml``
    The whole resolved config of the run (written at the start too).
``OUT/train_state.pt``
    Everything else a resumed run needs: the full method state dict (losses' parameters included),
    optimiser, schedule and gradient-scaler states, the position in the data (step, epoch and
    micro-batches consumed in that epoch) and every process's RNG states (torch CPU and CUDA, numpy,
    python ``random``). It holds only tensors and plain Python values, so it loads with
    ``torch.load(weights_only=True)`` and never unpickles code.

Each file is written atomically; ``model.safetensors`` first and ``train_state.pt`` last, so a state
that exists always has weights at least as new next to it. Only rank 0 writes; every rank's RNG state
is gathered first so each rank resumes its own random stream.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annofree.engine import distributed
from annofree.engine.config import save_config
from annofree.errors import UserError
from annofree.io import atomic_write
from annofree.weights import WEIGHTS_NAME, save_weights

CONFIG_NAME = "config.yaml"
STATE_NAME = "train_state.pt"
STEP_KEY = "annofree.step"
STATE_FORMAT = 1


@dataclass
class Progress:
    """Where the run is: optimiser steps done, the epoch and the micro-batches this rank has used in it."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    skipped: int = 0  # corrupt samples skipped so far, over all ranks
    elapsed_s: float = 0.0  # training time so far, over all sessions of the run


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (``weights_only``-loadable)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "cuda": None,
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Put back the RNG states taken by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))
    if state.get("cuda") is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    out_dir: str | Path,
    *,
    method: Any,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    device: torch.device,
) -> None:
    """Write weights and training state. Collective: every rank calls it; rank 0 writes."""
    rng = distributed.all_gather_objects(capture_rng(device))
    if distributed.is_main():
        out_dir = Path(out_dir)
        save_weights(
            out_dir / WEIGHTS_NAME,
            method.deployable(),
            method.name,
            method.model_config(),
            extra={STEP_KEY: str(progress.step)},
        )
        state = {
            "format": STATE_FORMAT,
            **asdict(progress),
            "world_size": len(rng),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
        }
        atomic_write(out_dir / STATE_NAME, lambda tmp: torch.save(state, tmp))
    distributed.barrier()


def write_config(config: dict[str, Any], out_dir: str | Path) -> None:
    """The resolved config next to the weights (rank 0 only)."""
    if distributed.is_main():
        save_config(config, Path(out_dir) / CONFIG_NAME)


def has_state(out_dir: str | Path) -> bool:
    return (Path(out_dir) / STATE_NAME).is_file()


def load_state(out_dir: str | Path) -> dict[str, Any]:
    """The training state saved in ``out_dir`` (on the CPU); a clear error when there is none."""
    path = Path(out_dir) / STATE_NAME
    if not path.is_file():
        raise UserError(f"{out_dir}: nothing to resume (no {STATE_NAME}); start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, do not dump a pickle traceback
        raise UserError(f"{path}: unreadable training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not an annofree training state (format {STATE_FORMAT})")
    return state


def state_mismatch(expected: Mapping[str, Any], saved: Mapping[str, Any]) -> str:
    """In a few words, how the ``saved`` state dict differs from the ``expected`` one ("" when it fits)."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k} {tuple(saved[k].shape)} -> {tuple(v.shape)}"
        for k, v in expected.items()
        if k in saved and hasattr(v, "shape") and hasattr(saved[k], "shape") and saved[k].shape != v.shape
    ]
    parts = [
        f"{label} {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
        for label, names in (("shapes", shapes), ("new", missing), ("gone", unexpected))
        if names
    ]
    return "; ".join(parts)


def progress_of(state: dict[str, Any]) -> Progress:
    return Progress(
        step=int(state["step"]),
        epoch=int(state["epoch"]),
        batches_in_epoch=int(state["batches_in_epoch"]),
        skipped=int(state["skipped"]),
        elapsed_s=float(state["elapsed_s"]),
    )


def weights_step(out_dir: str | Path) -> int | None:
    """The step recorded in ``OUT/model.safetensors`` (None without the file or the key)."""
    path = Path(out_dir) / WEIGHTS_NAME
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            value = (f.metadata() or {}).get(STEP_KEY)
    except (SafetensorError, OSError):
        return None
    return int(value) if value is not None and value.isdigit() else None
