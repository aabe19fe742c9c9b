"""What the demos share: their recipes, how command-line overrides reach them, rendering once, training.

Each method's demo has a packaged recipe, ``configs/METHOD/demo.yaml``. On the command line an override
``groupvit.train.steps=100`` goes to the GroupViT demo only; an override without a method prefix is
accepted when a single demo runs, and is then that demo's.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from annofree.engine.config import check_method_config, load_config, resolve_engine_config
from annofree.engine.logging import read_log
from annofree.engine.trainer import TrainResult, train
from annofree.errors import UserError
from annofree.methods import get_method

METHODS = ("groupvit", "densesiam")


def default_config_path(method: str = "groupvit") -> Path:
    """The demo recipe shipped with the package (``configs/METHOD/demo.yaml`` in the repository)."""
    if method not in METHODS:
        raise UserError(f"no demo for {method!r}; demos: {', '.join(METHODS)}")
    return Path(str(resources.files("annofree") / "configs" / method / "demo.yaml"))


def load_demo_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), method: str = "groupvit"
) -> dict[str, Any]:
    """A demo recipe with overrides, read by ``load_config`` (a relative ``train.init_weights`` is taken relative to
    the recipe file that sets it, so a recipe based on ``demo.yaml`` elsewhere still finds the packaged
    checkpoint). Every section is checked as ``annofree train`` checks it, before the demo renders or trains."""
    path = Path(path or default_config_path(method))
    config = load_config(path, list(overrides))
    check_method_config(resolve_engine_config(config), get_method(config.get("method") or method))
    return config


def route_overrides(overrides: Sequence[str], methods: Sequence[str]) -> dict[str, list[str]]:
    """``{method: its overrides}``: ``METHOD.key=value`` for that method, a bare ``key=value`` for the only one."""
    routed: dict[str, list[str]] = {method: [] for method in methods}
    for override in overrides:
        prefix, _, rest = override.partition(".")
        if prefix.lstrip("+") in METHODS:
            method = prefix.lstrip("+")
            if method not in routed:
                raise UserError(f"override {override!r}: the {method} demo does not run here")
            routed[method].append(("+" if prefix.startswith("+") else "") + rest)
        elif len(methods) == 1:
            routed[methods[0]].append(override)
        else:
            raise UserError(
                f"override {override!r}: say which demo it is for (groupvit.{override.lstrip('+')} or "
                f"densesiam.{override.lstrip('+')}), or run one demo with --method"
            )
    return routed


def render_once(out: Path, settings: dict[str, Any], render: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``render()``'s JSON-ready result, rendering only when ``out`` was not rendered with these settings."""
    stamp, saved = out / "settings.json", out / "rendered.json"
    if stamp.exists() and saved.exists() and json.loads(stamp.read_text()) == settings:
        return json.loads(saved.read_text())
    stamp.unlink(missing_ok=True)
    result = render()
    saved.write_text(json.dumps(result))
    stamp.write_text(json.dumps(settings))  # last: an interrupted render is rendered again
    return result


def train_fresh(config: dict[str, Any], run_dir: Path, data: str) -> tuple[TrainResult, dict[str, Any]]:
    """Train into ``run_dir`` (replacing a previous demo's run there); returns the result and run facts."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    began = time.perf_counter()
    result = train(config, run_dir, data=data)
    seconds = time.perf_counter() - began
    losses = [r["loss"] for r in read_log(run_dir / "log.jsonl") if "loss" in r]
    steps = config["train"]["steps"]
    return result, {
        "train_seconds": round(seconds, 1),
        "train_steps": steps,
        "train_images": steps * config["train"]["batch_size"] * config["optim"]["accum_steps"],
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }


def untrained_model(config: dict[str, Any]) -> torch.nn.Module:
    """The model exactly as training starts it: the engine seeds with ``seed`` before building the method."""
    torch.manual_seed(int(config.get("seed", 0)))
    return get_method(config["method"])(config).deployable()


def run_size(config: dict[str, Any]) -> str:
    return f"{config['train']['steps']} steps of {config['train']['batch_size']} images"
