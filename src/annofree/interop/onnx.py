"""Export a GroupViT to ONNX: an image model and a text model that onnxruntime runs without PyTorch.

``export_onnx(model, DIR)`` writes three files (read back by :class:`annofree.inference.onnx_runtime.OnnxGroupViT`):

- ``image.onnx``: ``pixels [B, 3, H, W]`` float32, **already normalised** with the pixel mean/std of
  ``onnx_config.json`` (as ``GroupViT.encode_groups`` takes them; H and W multiples of the patch size,
  batch and size dynamic) -> ``image_embeds [B, D]`` and ``group_embeds [B, G, D]`` (unit norm),
  ``grouping [B, G, h, w]`` (the soft patch -> final group maps chained over the stages, on the patch
  grid) and ``soft_assignment_i [B, S_i, N_i]`` (each grouping stage on its own).
- ``text.onnx``: ``token_ids [N, context_length]`` int64 (CLIP BPE ids, as ``annofree.tokenize`` gives)
  -> ``text_embeds [N, D]`` (unit norm), N dynamic.
- ``onnx_config.json``: what a runtime needs besides the graphs: pixel mean/std, patch and training
  image size, context length, the logit scale, input/output names and the annofree model config.

Pixels enter normalised so that sliding windows and the resize to whole patches run on the same tensors as
with the PyTorch model; normalising is one line for any other runtime (``(x - mean) / std``).

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx``
package and keeps the bicubic position-embedding resize dynamic in the image size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from annofree.errors import UserError

IMAGE_FILE, TEXT_FILE, CONFIG_FILE = "image.onnx", "text.onnx", "onnx_config.json"
FORMAT = "annofree-groupvit-onnx"
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on
MIN_OPSET = 14  # scaled_dot_product_attention


class ImageGraph(nn.Module):
    """``GroupViT.encode_groups`` as a tuple of tensors; the grouping maps keep the patch grid as their shape."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.encode_groups(pixels)
        maps = out.grouping.transpose(1, 2).unflatten(2, out.grid)  # [B, G, h, w]
        return (out.image_embeds, out.group_embeds, maps, *out.soft_assignments)


class TextGraph(nn.Module):
    """``GroupViT.encode_text`` on ``[N, context_length]`` token ids."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(token_ids)


def image_output_names(num_stages: int) -> list[str]:
    return ["image_embeds", "group_embeds", "grouping", *(f"soft_assignment_{i}" for i in range(num_stages))]


def _image_axes(num_stages: int) -> dict[str, dict[int, str]]:
    axes = {"pixels": {0: "batch", 2: "height", 3: "width"}, "image_embeds": {0: "batch"}}
    axes |= {"group_embeds": {0: "batch"}, "grouping": {0: "batch", 2: "grid_height", 3: "grid_width"}}
    for i in range(num_stages):  # only the first stage sees the patches; later ones see fixed group counts
        axes[f"soft_assignment_{i}"] = {0: "batch", 2: "patches"} if i == 0 else {0: "batch"}
    return axes


def _export(module: nn.Module, example: torch.Tensor, path: Path, opset: int, names: tuple, axes: dict) -> None:
    from annofree.io import atomic_write

    inputs, outputs = names

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # The exporter's deprecation notice and the tracer's shape-to-Python warnings (the shapes that
            # matter are kept dynamic; tests compare onnxruntime with PyTorch at several sizes).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)  # ids are >= 0
            try:
                torch.onnx.export(
                    module, (example,), tmp, dynamo=False, opset_version=opset, input_names=inputs,
                    output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
                )  # fmt: skip
            except RuntimeError as exc:
                if "opset" not in str(exc):
                    raise
                raise UserError(f"opset {opset}: {str(exc).splitlines()[0]}") from None

    atomic_write(path, write)


def _config(model: nn.Module, opset: int, num_stages: int) -> dict:
    cfg = model.config
    return {
        "format": FORMAT,
        "version": 1,
        "opset": opset,
        "pixels": "normalised: (x - pixel_mean) / pixel_std with x in [0, 1], RGB, [B, 3, H, W]",
        "pixel_mean": list(cfg.pixel_mean),
        "pixel_std": list(cfg.pixel_std),
        "patch_size": cfg.image.patch_size,
        "img_size": cfg.image.img_size,
        "context_length": cfg.text.context_length,
        "logit_scale": float(model.scale()),
        "multi_label_logit_scale": float(model.scale(multi_label=True)),
        "image": {"file": IMAGE_FILE, "inputs": ["pixels"], "outputs": image_output_names(num_stages)},
        "text": {"file": TEXT_FILE, "inputs": ["token_ids"], "outputs": ["text_embeds"]},
        "model_config": cfg.to_dict(),
    }


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> list[Path]:
    """Write ``image.onnx``, ``text.onnx`` and ``onnx_config.json`` of a GroupViT into ``out_dir``.

    The model is exported in eval mode (its mode is restored); the config is written last, so a directory
    with ``onnx_config.json`` holds a complete export. Returns the three paths.
    """
    from annofree.inference.pixels import eval_mode
    from annofree.io import atomic_write
    from annofree.models import GroupViT

    if not isinstance(model, GroupViT):
        raise UserError(f"ONNX export needs a GroupViT, not {type(model).__name__}")
    if opset < MIN_OPSET:
        raise UserError(f"opset {opset}: GroupViT's attention needs ONNX opset {MIN_OPSET} or later")
    _require_onnx()
    out_dir = Path(out_dir)
    stages = len(model.config.image.depths) - 1
    pixels, token_ids = _examples(model)
    paths = [out_dir / IMAGE_FILE, out_dir / TEXT_FILE, out_dir / CONFIG_FILE]
    paths[2].unlink(missing_ok=True)  # an earlier export's config must not vouch for half-replaced graphs
    with eval_mode(model):
        names = (["pixels"], image_output_names(stages))
        _export(ImageGraph(model).eval(), pixels, paths[0], opset, names, _image_axes(stages))
        text_axes = {"token_ids": {0: "texts"}, "text_embeds": {0: "texts"}}
        _export(TextGraph(model).eval(), token_ids, paths[1], opset, (["token_ids"], ["text_embeds"]), text_axes)
        text = json.dumps(_config(model, opset, stages), indent=2) + "\n"
    for path in paths[:2]:
        _check(path)
    atomic_write(paths[2], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return paths


def _examples(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs to trace with: two non-square images (the batch and both sides then stay symbolic) and two texts."""
    param = next(model.parameters())
    patch, text = model.config.image.patch_size, model.config.text
    pixels = torch.zeros(2, 3, 2 * patch, 3 * patch, device=param.device, dtype=param.dtype)
    token_ids = torch.zeros(2, text.context_length, dtype=torch.long, device=param.device)
    token_ids[:, -1] = text.vocab_size - 1  # the end-of-text id, where the text encoder pools
    return pixels, token_ids


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install onnx") from None


def _check(path: Path) -> None:
    """onnx's structural checker on the written file (catches an exporter bug before a runtime does)."""
    import onnx

    onnx.checker.check_model(str(path))


__all__ = ["CONFIG_FILE", "IMAGE_FILE", "TEXT_FILE", "export_onnx"]
