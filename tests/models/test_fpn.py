"""PiCIE-style FPN: 1x1 laterals with bias, top-down bilinear sums, stride-4 output; official key names."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from annofree.models.fpn import FPNDecoder, from_official_keys
from annofree.models.resnet import resnet18

CHANNELS = {"res2": 64, "res3": 128, "res4": 256, "res5": 512}


def _features(size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(2, c, size // 2 ** (i + 2), size // 2 ** (i + 2), generator=gen)
        for i, (name, c) in enumerate(CHANNELS.items())
    }


def test_parameters_are_four_biased_laterals() -> None:
    fpn = FPNDecoder(CHANNELS, out_channels=128)
    shapes = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    assert shapes == {
        **{f"lateral.{n}.weight": (128, c, 1, 1) for n, c in CHANNELS.items()},
        **{f"lateral.{n}.bias": (128,) for n in CHANNELS},
    }


def test_output_equals_top_down_sum_written_out() -> None:
    fpn = FPNDecoder(CHANNELS, out_channels=8)
    feats = _features()
    lat = {n: fpn.lateral[n](feats[n]) for n in CHANNELS}
    up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
    p4 = up(lat["res5"], lat["res4"]) + lat["res4"]
    p3 = up(p4, lat["res3"]) + lat["res3"]
    expected = up(p3, lat["res2"]) + lat["res2"]
    out = fpn(feats)
    assert out.shape == (2, 8, 16, 16)
    torch.testing.assert_close(out, expected)


def test_odd_sizes_follow_the_finer_lateral() -> None:
    trunk = resnet18().eval()
    fpn = FPNDecoder(trunk.channels)
    feats = trunk.forward_features(torch.randn(1, 3, 50, 38))
    assert fpn(feats).shape == (1, 128, *feats["res2"].shape[-2:]) == (1, 128, 13, 10)


def test_official_keys_are_renamed() -> None:
    official = {
        "decoder.layer1.weight": torch.zeros(128, 512, 1, 1),
        "decoder.layer4.bias": torch.ones(128),
        "backbone.conv1.weight": torch.zeros(1),
    }
    renamed = from_official_keys(official, prefix="decoder.")
    assert set(renamed) == {"lateral.res5.weight", "lateral.res2.bias"}
    fpn = FPNDecoder(CHANNELS)
    fpn.load_state_dict({**fpn.state_dict(), **renamed})
    assert torch.all(fpn.lateral["res2"].bias == 1)
