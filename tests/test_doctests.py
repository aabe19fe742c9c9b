"""The ``>>>`` examples in the library's docstrings run as written (``make test`` runs them through this file).

Every module of ``src/annofree`` whose source holds ``>>>`` is imported and its examples run with :mod:`doctest`;
an example that needs files or weights the tests do not have is marked ``# doctest: +SKIP`` where it stands.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import annofree

SRC = Path(annofree.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(path) for path in SRC.rglob("*.py") if ">>>" in path.read_text(encoding="utf-8"))


def test_the_examples_are_found() -> None:
    assert {"annofree.sections", "annofree.engine.optim", "annofree.models.config"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
