"""A GroupViT exported to ONNX (``annofree export onnx``), run by onnxruntime.

:class:`OnnxGroupViT` offers what :class:`~annofree.inference.zero_shot.ZeroShotSegmenter` calls on a
GroupViT (``encode_groups``, ``encode_text``, ``normalize_pixels``, ``scale``, ``config``), so zero-shot
segmentation, sliding windows included, runs the same post-processing on onnxruntime's outputs as on
PyTorch's. No module of the model runs here: torch only holds the arrays for the post-processing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from annofree.errors import UserError
from annofree.interop.onnx import CONFIG_FILE, FORMAT
from annofree.models.config import GroupViTConfig
from annofree.models.groupvit import GroupOutput
from annofree.models.text_encoder import check_token_length

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
REQUIRED = ("pixel_mean", "pixel_std", "logit_scale", "multi_label_logit_scale", "image", "text", "model_config")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running ONNX models needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def read_onnx_config(directory: str | Path) -> dict:
    """``onnx_config.json`` of an export directory; a one-line error when it is missing or not an export."""
    if Path(directory).is_file():
        raise UserError(f"{directory}: a file; give the directory that `annofree export onnx` wrote")
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{directory}: no ONNX export here (no {CONFIG_FILE}; write one with `annofree export onnx`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable ONNX export config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{path}: not an annofree GroupViT ONNX export config")
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise UserError(f"{path}: incomplete ONNX export config (no {', '.join(missing)})")
    return config


def _model_config(spec: dict, directory: Path) -> GroupViTConfig:
    try:
        return GroupViTConfig.from_dict(spec["model_config"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{directory / CONFIG_FILE}: model_config is not a GroupViT config ({exc})") from None


class OnnxGroupViT:
    """The image and text models of an ONNX export directory, with a GroupViT's inference methods.

    Args:
        directory: what ``annofree export onnx`` wrote (``image.onnx``, ``text.onnx``, ``onnx_config.json``).
        device: ``"cpu"`` or ``"cuda"`` (needs the onnxruntime-gpu package); outputs come back on the CPU.
        threads: onnxruntime's intra-op threads; ``None`` uses as many as torch (``OMP_NUM_THREADS``).
    """

    method = "groupvit"  # segmented as a GroupViT (annofree.inference.segmenters)
    dtype = torch.float32
    device = torch.device("cpu")  # where inputs and outputs live; onnxruntime copies to its own device

    def __init__(self, directory: str | Path, device: str = "cpu", threads: int | None = None):
        ort = _onnxruntime()
        self.directory = Path(directory)
        spec = read_onnx_config(directory)
        self.spec = spec
        self.config = _model_config(spec, self.directory)
        self._mean = torch.tensor(spec["pixel_mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(spec["pixel_std"], dtype=torch.float32).view(1, 3, 1, 1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads() if threads is None else int(threads)
        providers = [_provider(ort, device)]
        self.image_session = _session(ort, self.directory / spec["image"]["file"], options, providers)
        self.text_session = _session(ort, self.directory / spec["text"]["file"], options, providers)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` floats in [0, 1] -> the image model's input normalisation."""
        return (images - self._mean) / self._std

    def encode_groups(self, pixels: torch.Tensor) -> GroupOutput:
        """Normalised pixels ``[B, 3, H, W]`` (H, W multiples of the patch size) -> ``GroupOutput``."""
        patch = self.config.image.patch_size
        if pixels.shape[-2] % patch or pixels.shape[-1] % patch:
            raise ValueError(f"image size {tuple(pixels.shape[-2:])} is not a multiple of the patch size {patch}")
        outputs = self.image_session.run(None, {"pixels": _numpy(pixels, np.float32)})
        image, groups, maps, *soft = (torch.from_numpy(array) for array in outputs)
        return GroupOutput(
            image_embeds=image,
            group_embeds=groups,
            grouping=maps.flatten(2).transpose(1, 2),
            soft_assignments=list(soft),
            grid=(int(maps.shape[2]), int(maps.shape[3])),
        )

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels -> image embeddings ``[B, D]``, unit norm (zero-shot classification)."""
        return self.encode_groups(pixels).image_embeds

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        """CLIP BPE ids ``LongTensor[N, context_length]`` of ``texts`` at the exported model's context length."""
        from annofree.data.tokenizer import tokenize

        return tokenize(texts, context_length=self.config.text.context_length)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[N, L]`` (``L`` at most the context length, as :meth:`tokenize` gives) -> ``[N, D]``, unit
        norm. Shorter ids are padded with zeros to the exported length (the padding does not change the result)."""
        context = self.config.text.context_length
        check_token_length(int(token_ids.shape[-1]), context)
        token_ids = torch.nn.functional.pad(token_ids, (0, context - int(token_ids.shape[-1])))
        (embeds,) = self.text_session.run(None, {"token_ids": _numpy(token_ids, np.int64)})
        return torch.from_numpy(embeds)

    def scale(self, multi_label: bool = False) -> torch.Tensor:
        """exp(logit scale) as exported (already clamped at 100)."""
        return torch.tensor(self.spec["multi_label_logit_scale" if multi_label else "logit_scale"])

    def __repr__(self) -> str:
        return f"OnnxGroupViT({str(self.directory)!r})"


def _numpy(x: torch.Tensor, dtype) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)


def _provider(ort, device: str) -> str:
    name = PROVIDERS.get(str(device).split(":")[0])
    if name is None:
        raise UserError(f"device {device!r}: ONNX models run on 'cpu' or 'cuda'")
    if name not in ort.get_available_providers():
        raise UserError(f"device {device!r}: this onnxruntime has no {name} (pip install onnxruntime-gpu)")
    return name


def _session(ort, path: Path, options, providers: list[str]):
    if not path.is_file():
        raise UserError(f"{path}: missing from the ONNX export (export it again with `annofree export onnx`)")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid files
        raise UserError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None


__all__ = ["OnnxGroupViT", "read_onnx_config"]
