"""train.compile: the method's forward through torch.compile, the same numbers as eager, eager where it cannot."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from annofree.engine import compiled as compiled_module
from annofree.engine.checkpoint import load_state
from annofree.engine.compiled import CompiledForward, compile_forward
from annofree.engine.trainer import train

from .toy_method import toy_config

CPU = torch.device("cpu")


class Tiny(nn.Module):
    """Dropout and a keyword path, as the methods have (``embed_only``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor, *, embed_only: bool = False) -> torch.Tensor:
        hidden = self.net[:4](x)
        return hidden if embed_only else self.net[4](hidden)


def _loss_and_grads(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout draws for both
    loss = module(x).square().mean() + module(x, embed_only=True).mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in module.named_parameters()}


def test_compiled_forward_gives_eager_loss_and_grads_and_keeps_state_names() -> None:
    torch.manual_seed(0)
    module, x = Tiny().train(), torch.randn(8, 6)
    names = list(module.state_dict())
    eager_loss, eager_grads = _loss_and_grads(module, x)
    warnings: list[str] = []
    handle = compile_forward(module, warnings.append, CPU)
    assert isinstance(module.forward, CompiledForward)
    assert "embed_only" in inspect.signature(module.forward).parameters  # introspection sees the real forward
    compiled_loss, compiled_grads = _loss_and_grads(module, x)
    assert handle is not None and handle.active and warnings == []  # it really ran compiled
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert list(module.state_dict()) == names  # no _orig_mod. prefix: checkpoints load either way


def test_a_backend_error_at_the_first_call_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(function, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("backend exploded\nsecond line of a long dump")

        return run

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    torch.manual_seed(0)
    module, x = Tiny().eval(), torch.randn(4, 6)
    expected = module(x)
    warnings: list[str] = []
    handle = compile_forward(module, warnings.append, CPU, what="train.compile")
    torch.testing.assert_close(module(x), expected)
    torch.testing.assert_close(module(x), expected)
    assert handle is not None and not handle.active
    assert "forward" not in vars(module)  # the class's own forward again
    assert warnings == [
        "warning: train.compile: torch.compile failed (RuntimeError: backend exploded); "
        "running eagerly (as with compile off)"
    ]


def test_an_error_of_the_forward_itself_still_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    module = Tiny()
    compile_forward(module, lambda text: None, CPU)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        module(torch.randn(4, 5))  # wrong width: eager raises it again after the compiled attempt


def test_without_a_cpp_compiler_it_warns_and_stays_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_module, "missing_compiler", lambda device: "no working C++ compiler (test)")
    module, warnings = Tiny(), []
    assert compile_forward(module, warnings.append, CPU, what="train.compile") is None
    assert "forward" not in vars(module)
    assert warnings == ["warning: train.compile: no working C++ compiler (test); running eagerly (as with compile off)"]


def test_compiled_training_matches_eager_and_its_checkpoint_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sections = {"optim": {"clip_grad": 1.0}, "train": {"steps": 4, "save_every": 2}}
    eager = train(toy_config(**sections), tmp_path / "eager", data="toy")
    capsys.readouterr()
    compiled_run = toy_config(**{**sections, "train": {**sections["train"], "compile": True}})
    compiled = train(compiled_run, tmp_path / "compiled", data="toy")
    first_line = capsys.readouterr().out.strip().splitlines()[0]
    assert ", compiled," in first_line and "warning" not in first_line
    assert isinstance(compiled.method.forward, CompiledForward) and compiled.method.forward.active
    eager_state, compiled_state = eager.method.state_dict(), compiled.method.state_dict()
    assert list(compiled_state) == list(eager_state)
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert list(load_state(tmp_path / "compiled")["method"]) == list(eager_state)
    # The compiled run's checkpoint resumes eagerly and the other way round: the names are the same.
    more = {**sections, "train": {**sections["train"], "steps": 5}}
    assert train(toy_config(**more), tmp_path / "compiled", data="toy", resume=True).step == 5
