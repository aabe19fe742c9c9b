"""A module's forward through ``torch.compile``, falling back to eager (with a one-line warning) where it cannot.

What ``train.compile: true`` does to the method::

    compiled = compile_forward(method, warn=print)   # method(batch), method(batch, embed_only=True), DDP(method)(...)
    ...                                              # all run the compiled forward from now on
    compiled.active                                  # False once it fell back to eager

Only ``module.forward`` is replaced (an instance attribute), so the module is not wrapped: its parameters,
``state_dict()`` names (no ``_orig_mod.`` prefix), hooks and checkpoints are the same as without compiling, and
every call of the module with any arguments goes through the compiled function. Where compiling cannot work the
module runs eagerly, as if ``compile`` were off:

- at set-up, when the CPU backend has no C++ compiler to build its kernels;
- at any call whose compiling or compiled run raises (a backend error at the first step, a failed recompile for a
  new input shape): that call is re-run eagerly and the module stays eager; an error of the forward itself
  then surfaces from the eager run, as it would without compiling.

The backward graph is compiled at the forward call (not lazily at the first backward), so a backend error in it
is caught there too; random ops use torch's own generator (``fallback_random``), so a compiled forward draws the
same Gumbel noise, dropout and drop path as the eager one from the same RNG state.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Inductor settings: random numbers from torch's generator, exactly as eager draws them (a replayed RNG state
# gives the same noise, compiled or not).
_INDUCTOR_OPTIONS = {"fallback_random": True}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def missing_compiler(device: torch.device) -> str | None:
    """Why the default backend cannot compile for ``device`` (None when it can try)."""
    if device.type != "cpu":
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # any failure to find or run it means no kernels can be built
        return f"no working C++ compiler for torch.compile's CPU kernels ({_first_line(exc)})"
    return None


def _eager_backward_lowering() -> contextlib.AbstractContextManager:
    """Compile the backward graph together with the forward one, so that its errors surface at the forward call."""
    config = getattr(torch._functorch, "config", None)
    if config is None or "force_non_lazy_backward_lowering" not in getattr(config, "_config", {}):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


class CompiledForward:
    """The compiled replacement of one module's forward, with its eager fallback (see the module docstring)."""

    def __init__(self, module: nn.Module, warn: Callable[[str], None], what: str):
        self.module = module
        self.eager = module.forward  # the class's forward, bound to the module
        functools.update_wrapper(self, self.eager)  # its name, docstring and signature (inspect follows __wrapped__)
        self.compiled = torch.compile(self.eager, options=_INDUCTOR_OPTIONS)
        self.warn = warn
        self.what = what
        self.active = True
        module.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.active:
            return self.eager(*args, **kwargs)
        try:
            with _eager_backward_lowering():
                return self.compiled(*args, **kwargs)
        except Exception as exc:  # a genuine forward error is raised again by the eager run below
            self.fall_back(f"torch.compile failed ({_first_line(exc)})")
            return self.eager(*args, **kwargs)

    def fall_back(self, reason: str) -> None:
        """Run the module eagerly from now on and say why (once)."""
        if self.active:
            self.active = False
            del self.module.forward  # the class's forward again
            self.warn(f"warning: {self.what}: {reason}; running eagerly (as with compile off)")


def compile_forward(
    module: nn.Module, warn: Callable[[str], None], device: torch.device, what: str = "compile"
) -> CompiledForward | None:
    """Route every call of ``module`` through ``torch.compile``; None (and a warning) where it cannot compile."""
    reason = missing_compiler(device)
    if reason is not None:
        warn(f"warning: {what}: {reason}; running eagerly (as with compile off)")
        return None
    return CompiledForward(module, warn, what)
