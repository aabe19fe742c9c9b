"""Which floating-point precision to compute in on a device: ``auto`` picks bf16 where the device runs it natively.

``train.precision`` (and any inference code that wants the same rule) is one of :data:`PRECISIONS`. ``auto``
resolves per machine, because machines of one kind differ: bf16 autocast is several times faster than fp32
on a CPU with bf16 instructions (avx512_bf16, AMX) and far slower where torch has to emulate it::

    from annofree.precision import autocast, resolve_precision

    name, reason = resolve_precision("auto", torch.device("cpu"))   # ("bf16", "this CPU runs bf16 natively: ...")
    with autocast(name, device):
        outputs = model(inputs)

The rule for ``auto``: CUDA -> bf16 when the GPU has bf16 arithmetic (``torch.cuda.is_bf16_supported`` without
emulation); an x86 CPU -> bf16 when it has bf16 instructions (avx512_bf16 or AMX tiles; torch's own
``torch.ops.mkldnn._is_mkldnn_bf16_supported`` also says yes on plain AVX-512, where oneDNN emulates bf16); another
CPU (ARM) -> bf16 when torch reports native bf16; every other device -> fp32. fp16 is never chosen by ``auto``
(it needs a gradient scaler and overflows where bf16 does not). An explicit fp32 / bf16 / fp16 is kept as given.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def _torch_flag(module: object, name: str) -> bool:
    """A torch feature probe, False where this torch build lacks it."""
    probe: Callable[[], bool] | None = getattr(module, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except (RuntimeError, AttributeError):
        return False


def cpu_bf16_features() -> dict[str, bool]:
    """What torch reports about bf16 on this CPU: ``mkldnn_bf16`` (oneDNN runs bf16 kernels, natively or
    emulated), ``avx512_bf16`` and ``amx_tile`` (bf16 instructions)."""
    return {
        "mkldnn_bf16": _torch_flag(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"),
        "avx512_bf16": _torch_flag(torch.cpu, "_is_avx512_bf16_supported"),
        "amx_tile": _torch_flag(torch.cpu, "_is_amx_tile_supported"),
    }


def _is_x86() -> bool:
    return platform.machine().lower() in _X86


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 arithmetic natively, and why (a phrase for the log)."""
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # an older torch without the switch
            native = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return native, f"{name} {'has' if native else 'has no'} native bf16"
    if device.type != "cpu":
        return False, f"bf16 autocast is not chosen automatically on {device.type}"
    features = cpu_bf16_features()
    if not _is_x86():
        native = features["mkldnn_bf16"]
        return native, f"torch reports {'native' if native else 'no native'} bf16 on this {platform.machine()} CPU"
    instructions = [name for name in ("avx512_bf16", "amx_tile") if features[name]]
    if instructions and features["mkldnn_bf16"]:
        return True, f"this CPU runs bf16 natively: {', '.join(instructions)}"
    if features["mkldnn_bf16"]:
        return False, "this CPU has no bf16 instructions (no avx512_bf16 or AMX): torch would emulate bf16"
    return False, "torch reports no native bf16 on this CPU"


def resolve_precision(requested: str, device: torch.device | str) -> tuple[str, str]:
    """``(precision, reason)``: ``auto`` resolved for ``device`` to bf16 or fp32; any other value kept as given."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {' | '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested, "as configured"
    native, why = native_bf16(torch.device(device))
    return ("bf16" if native else "fp32"), why


def describe(requested: str, resolved: str, reason: str) -> str:
    """The phrase a log shows: ``precision auto -> bf16 (this CPU runs bf16 natively: avx512_bf16)``."""
    if requested == "auto":
        return f"precision auto -> {resolved} ({reason})"
    return f"precision {resolved} ({reason})"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast to a resolved precision's dtype on ``device`` (nothing for fp32)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
