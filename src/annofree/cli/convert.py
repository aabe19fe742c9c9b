"""``annofree convert``: turn a model saved in another format into annofree weights (and, later, back).

Formats are named; each supported (from, to) pair maps to one library function in ``_CONVERTERS``.
Adding ``--from official`` or ``--to hf`` means writing its function and adding one entry there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from annofree.errors import UserError

# Every format the command knows by name; pairs without a converter answer "not supported yet".
SOURCE_FORMATS = ("hf", "official", "annofree")
TARGET_FORMATS = ("annofree", "hf", "official")
_FORMAT_NAMES = {
    "hf": "a Hugging Face transformers checkpoint directory",
    "official": "an official NVlabs/GroupViT checkpoint",
    "annofree": "annofree weights",
}


def _hf_to_annofree(source: Path, out: Path) -> Path:
    """transformers ``GroupViTModel`` directory -> annofree ``model.safetensors``."""
    from annofree.interop.hf import load_hf_checkpoint
    from annofree.weights import save_weights

    model = load_hf_checkpoint(source)
    extra = {"annofree.converted_from": f"transformers:{source.name}"}
    return save_weights(out, model, "groupvit", model.config.to_dict(), extra=extra)


_CONVERTERS: dict[tuple[str, str], Callable[[Path, Path], Path]] = {
    ("hf", "annofree"): _hf_to_annofree,
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert model weights between formats",
        description=(
            "Convert model weights between formats. Supported now: --from hf (a transformers GroupViTModel "
            "directory with config.json and weights) --to annofree (the default)."
        ),
    )
    parser.add_argument("--from", dest="source_format", required=True, choices=SOURCE_FORMATS, help="input format")
    parser.add_argument("--to", dest="target_format", default="annofree", choices=TARGET_FORMATS, help="output format")
    parser.add_argument("source", type=Path, help="input checkpoint (a directory for --from hf)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output: a directory (gets model.safetensors) or a .safetensors file"
    )
    return parser


def convert(source_format: str, target_format: str, source: Path, out: Path) -> Path:
    """Run the converter for the (from, to) pair; ``UserError`` for pairs not supported (yet)."""
    if source_format == target_format:
        raise UserError(f"--from and --to are both {source_format!r}: nothing to convert")
    converter = _CONVERTERS.get((source_format, target_format))
    if converter is None:
        supported = ", ".join(f"--from {a} --to {b}" for a, b in _CONVERTERS)
        raise UserError(
            f"converting {_FORMAT_NAMES[source_format]} to {_FORMAT_NAMES[target_format]} is not supported yet "
            f"(supported: {supported})"
        )
    return converter(source, out)


def run(args: argparse.Namespace) -> int:
    path = convert(args.source_format, args.target_format, args.source, args.out)
    print(f"wrote {path}")
    return 0
