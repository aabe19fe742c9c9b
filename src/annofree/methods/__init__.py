"""The glue of each method: build modules and losses from a config, one training step, data."""

from annofree.methods import densesiam, groupvit  # noqa: F401  (registers the methods)
from annofree.methods.base import LoaderSpec, Method, get_method, register

__all__ = ["LoaderSpec", "Method", "get_method", "register"]
