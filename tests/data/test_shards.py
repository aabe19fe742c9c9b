"""annofree.data.shards: one import for the public names of the shard modules."""

from __future__ import annotations

import importlib

from annofree.data import shards


def test_every_public_name_is_the_object_of_its_module():
    modules = [importlib.import_module(f"annofree.data.{name}")
               for name in ("layout", "writer", "tar_reading", "sources", "sampling", "stream")]  # fmt: skip
    for name in shards.__all__:
        homes = [module for module in modules if getattr(module, name, None) is getattr(shards, name)]
        assert homes, name
