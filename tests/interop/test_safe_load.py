"""Weights-only reading of .pth files: data-only objects become inert, code is refused before anything runs."""

from __future__ import annotations

import builtins
import collections
import sys

import numpy as np
import pytest
import torch

from annofree.errors import UserError
from annofree.interop.safe_load import Inert, load_pth, plain_data


class _CallsEval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('os').getcwd()",))


def test_data_only_objects_load_as_inert_data_without_importing_them(tmp_path, monkeypatch) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({"model": {"img_encoder": {"num_heads": [6, 6, 6]}}, "lr": 1.6e-3})
    torch.save(
        {
            "model": {"w": torch.arange(3.0)},
            "config": config,
            "metrics": collections.defaultdict(float, {"acc1": 43.7}),
            "best": np.float64(0.5),
        },
        tmp_path / "ckpt.pth",
    )
    for name in [m for m in sys.modules if m.split(".")[0] == "omegaconf"]:
        monkeypatch.delitem(sys.modules, name)
    loaded = load_pth(tmp_path / "ckpt.pth")
    assert "omegaconf" not in sys.modules  # read as data, never imported
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert loaded["metrics"] == {"acc1": 43.7}
    assert isinstance(loaded["config"], Inert) and isinstance(loaded["best"], Inert)
    assert plain_data(loaded["config"]) == {"model": {"img_encoder": {"num_heads": [6, 6, 6]}}, "lr": 1.6e-3}


def test_a_builtin_that_runs_code_is_refused_by_name(tmp_path) -> None:
    torch.save({"x": _CallsEval()}, tmp_path / "eval.pth")
    with pytest.raises(UserError, match=r"refused: .*eval"):
        load_pth(tmp_path / "eval.pth")


def test_a_legacy_pickle_is_refused_unopened(tmp_path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="not a zip-format"):
        load_pth(tmp_path / "old.pth")
