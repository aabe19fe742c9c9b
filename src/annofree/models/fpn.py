"""The PiCIE-style FPN decoder that DenseSiam's released segmentation model puts on its ResNet.

What the official code does (ZwwWayne/DenseSiam ``densesiam/models/architectures/picie.py``,
``FPNDecoder``, the same decoder as janghyuncho/PiCIE ``modules/fpn.py``), and this module reproduces:

- four 1x1 ``nn.Conv2d`` laterals, one per stage res2..res5, each to ``out_channels`` (128) WITH a bias
  (torch's default), no normalisation and no activation;
- top-down: start from the res5 lateral, bilinearly resize (``align_corners=False``) to the next finer
  lateral's exact size and add, down to res2; the output is that sum at stride 4;
- NO 3x3 output ("smoothing") conv, no extra levels, only the stride-4 map is returned;
- input widths ``512 * mfactor // 8, // 4, // 2, 512 * mfactor`` (mfactor 1 for ResNet-18/34, 4 for
  ResNet-50), i.e. the ResNet stage widths;
- PiCIE L2-normalises the decoder output before its clustering; DenseSiam does not (its projector
  follows directly), so neither does this module.

The official laterals are named by depth from the top (``layer1`` reads res5 ... ``layer4`` reads res2);
here they are ``lateral.res2`` .. ``lateral.res5``. :func:`from_official_keys` renames an official
decoder ``state_dict``.

Example:
    >>> import torch
    >>> from annofree.models.resnet import resnet18
    >>> trunk = resnet18()
    >>> FPNDecoder(trunk.channels)(trunk.forward_features(torch.zeros(2, 3, 64, 64))).shape
    torch.Size([2, 128, 16, 16])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

_ORDER = ("res5", "res4", "res3", "res2")  # top-down
_OFFICIAL = {"layer1": "res5", "layer2": "res4", "layer3": "res3", "layer4": "res2"}


class FPNDecoder(nn.Module):
    """1x1 laterals + top-down bilinear sum: ``{"res2": [B, C2, H/4, W/4], ..., "res5": ...}`` ->
    ``[B, out_channels, H/4, W/4]`` (the res2 size).

    Args:
        in_channels: stage widths, e.g. ``ResNet.channels``.
        out_channels: decoder width (128 in DenseSiam and PiCIE).
    """

    def __init__(self, in_channels: Mapping[str, int], out_channels: int = 128):
        super().__init__()
        missing = set(_ORDER) - set(in_channels)
        if missing:
            raise ValueError(f"in_channels lacks stages {sorted(missing)}; need res2..res5")
        self.out_channels = out_channels
        self.lateral = nn.ModuleDict(
            {name: nn.Conv2d(in_channels[name], out_channels, kernel_size=1) for name in sorted(_ORDER)}
        )

    def forward(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self.lateral["res5"](feats["res5"])
        for name in _ORDER[1:]:
            lateral = self.lateral[name](feats[name])
            out = F.interpolate(out, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
        return out


def from_official_keys(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename an official DenseSiam/PiCIE ``FPNDecoder`` state_dict (``{prefix}layer1.weight`` ...) to
    this module's keys (``lateral.res5.weight`` ...). Keys outside the decoder are dropped."""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        head, _, tail = key[len(prefix) :].partition(".")
        if head in _OFFICIAL:
            out[f"lateral.{_OFFICIAL[head]}.{tail}"] = value
    return out


__all__ = ["FPNDecoder", "from_official_keys"]
