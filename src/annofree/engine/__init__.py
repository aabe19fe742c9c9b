"""The method-agnostic training engine: configs, processes, optimiser and schedule, loop, checkpoints, logs.

Example (a method registered under ``groupvit``)::

    from annofree.engine import load_config, train
    config = load_config("my_groupvit.yaml", ["optim.lr=1e-3"])
    result = train(config, "runs/tiny", data="shards/{000000..000009}.tar")
    result.weights  # runs/tiny/model.safetensors
"""

from annofree.engine.config import ENGINE_DEFAULTS, apply_overrides, load_config, resolve_engine_config, save_config
from annofree.engine.trainer import TrainResult, train

__all__ = [
    "ENGINE_DEFAULTS",
    "TrainResult",
    "apply_overrides",
    "load_config",
    "resolve_engine_config",
    "save_config",
    "train",
]
