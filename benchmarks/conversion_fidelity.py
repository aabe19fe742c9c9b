"""Largest output differences of two conversions against their source model (issue 18, points 1 and 5).

    PYTHONPATH=src:. .venv/bin/python benchmarks/conversion_fidelity.py

1. An official checkpoint in the RedCaps release's configuration (``multi_label: 0``: no
   ``multi_label_logit_scale``), written as tests/interop/test_official.py writes official files from a
   random transformers GroupViT, converted to annofree;
2. a transformers GroupViT whose vision ``intermediate_size`` is 2.5 x ``hidden_size`` (test_hf's
   ``MLP_WIDTHS``), converted to annofree, then exported back to transformers.

For each: max |difference| of the L2-normalised image embeddings, per-group embeddings, text embeddings and the
chained grouping maps. A conversion that is refused prints the one-line reason instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

from annofree.interop.hf import from_hf_model, save_hf_checkpoint
from annofree.interop.official import load_official_checkpoint
from tests.interop.test_hf import MLP_WIDTHS, build_hf, hf_chained_grouping, hf_vision, random_inputs
from tests.interop.test_official import OFFICIAL_SMALL, write_official_file


def max_differences(hf, ours, pixels: torch.Tensor, ids: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        tokens, attentions = hf_vision(hf, pixels)
        b, g, c = tokens.shape
        reference = {
            "image": F.normalize(hf.visual_projection(tokens.mean(1)), dim=-1),
            "groups": F.normalize(hf.visual_projection(tokens.reshape(b * g, c)), dim=-1).reshape(b, g, -1),
            "text": F.normalize(hf.get_text_features(input_ids=ids).pooler_output, dim=-1),
            "grouping": hf_chained_grouping(attentions),
        }
        out = ours.encode_groups(pixels)
        converted = {
            "image": out.image_embeds,
            "groups": out.group_embeds,
            "text": ours.encode_text(ids),
            "grouping": out.grouping,
        }
    return {name: (converted[name] - reference[name]).abs().max().item() for name in reference}


def _show(title: str, differences: dict[str, float]) -> None:
    print(f"{title}: " + ", ".join(f"{name} {value:.1e}" for name, value in differences.items()))


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    source = build_hf(OFFICIAL_SMALL, seed=11, sharpening=100.0)
    write_official_file(folder / "group_vit_gcc_redcap_30e.pth", source, multi_label=0)
    pixels, ids = random_inputs(source.config, batch=2, size=(48, 48), length=16)
    try:
        ours = load_official_checkpoint(folder / "group_vit_gcc_redcap_30e.pth")
        _show("RedCaps configuration, official -> annofree", max_differences(source, ours, pixels, ids))
    except Exception as exc:  # the figure before the fix is the refusal
        print(f"RedCaps configuration: refused: {str(exc).splitlines()[0]}")

    source = build_hf(MLP_WIDTHS, seed=4, sharpening=100.0)
    pixels, ids = random_inputs(source.config, batch=2, size=(48, 48), length=16)
    try:
        ours = from_hf_model(source)
        _show("intermediate_size 2.5 x hidden, transformers -> annofree", max_differences(source, ours, pixels, ids))
        back = transformers.GroupViTModel.from_pretrained(save_hf_checkpoint(ours, folder / "hf")).eval()
        _show("intermediate_size 2.5 x hidden, annofree -> transformers", max_differences(back, ours, pixels, ids))
    except Exception as exc:
        print(f"intermediate_size 2.5 x hidden: refused: {str(exc).splitlines()[0]}")


if __name__ == "__main__":
    main()
