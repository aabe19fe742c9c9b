"""``annofree convert``: move a GroupViT between annofree, the official NVlabs release and transformers.

Every format has one reader (to an annofree ``GroupViT``) and one writer (from it), so every pair converts:

- ``annofree``: ``model.safetensors`` (a run directory or file), or a named pretrained model;
- ``official``: the NVlabs/GroupViT ``.pth`` (``{"model": state_dict, ...}``), read without running pickled code;
- ``hf``: a transformers ``GroupViTModel`` directory (``config.json`` + weights).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from annofree.cli import hold_out_dir
from annofree.errors import UserError

FORMATS = ("annofree", "official", "hf")
SOURCE_FORMATS = TARGET_FORMATS = FORMATS
_FORMAT_NAMES = {
    "hf": "a Hugging Face transformers checkpoint directory",
    "official": "an official NVlabs/GroupViT checkpoint",
    "annofree": "annofree weights",
}


def _read_annofree(source: Path):
    from annofree.models import GroupViT
    from annofree.pretrained import load

    model = load(source)
    if not isinstance(model, GroupViT):
        raise UserError(f"{source}: only GroupViT weights convert to other formats, not {type(model).__name__}")
    return model


def _read_official(source: Path):
    from annofree.interop.official import load_official_checkpoint

    return load_official_checkpoint(source)


def _read_hf(source: Path):
    from annofree.interop.hf import load_hf_checkpoint

    return load_hf_checkpoint(source)


def _write_annofree(model, out: Path, source: str) -> Path:
    from annofree.weights import save_weights

    return save_weights(out, model, "groupvit", model.config.to_dict(), extra={"annofree.converted_from": source})


def _write_official(model, out: Path, source: str) -> Path:
    from annofree.interop.official import save_official_checkpoint

    if out.is_dir() or not out.suffix:
        out = out / "groupvit_official.pth"
    return save_official_checkpoint(model, out)


def _write_hf(model, out: Path, source: str) -> Path:
    from annofree.interop.hf import save_hf_checkpoint

    return save_hf_checkpoint(model, out)


_READERS: dict[str, Callable[[Path], object]] = {"annofree": _read_annofree, "official": _read_official, "hf": _read_hf}
_WRITERS: dict[str, Callable[[object, Path, str], Path]] = {
    "annofree": _write_annofree,
    "official": _write_official,
    "hf": _write_hf,
}


DESCRIPTION = """\
Convert GroupViT weights between formats: annofree (model.safetensors or a named
pretrained model), official (the NVlabs .pth release; read without running
pickled code) and hf (a transformers GroupViTModel directory).

examples:
  annofree convert --from official group_vit_gcc_yfcc_30e-879422e0.pth --out groupvit/
  annofree convert --from annofree groupvit/ --to hf --out groupvit-hf/
  annofree convert --from annofree groupvit/ --to official --out groupvit.pth
  annofree convert --from hf path/to/groupvit-dir --out groupvit.safetensors
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert GroupViT weights between annofree, official and transformers formats",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the examples stay one command a line
    )
    parser.add_argument("--from", dest="source_format", required=True, choices=FORMATS, help="input format")
    parser.add_argument("--to", dest="target_format", default="annofree", choices=FORMATS, help="output format")
    parser.add_argument("source", type=Path, help="input: a file, a directory (hf, a run) or a pretrained name")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output: a directory or .safetensors file (annofree), a directory (hf), a .pth file (official)",
    )
    return parser


def convert(source_format: str, target_format: str, source: Path, out: Path) -> Path:
    """Read ``source`` in one format and write it to ``out`` in another; ``UserError`` on any bad input."""
    if source_format == target_format:
        raise UserError(f"--from and --to are both {source_format!r}: nothing to convert")
    model = _READERS[source_format](source)
    out = Path(out)
    if target_format == "hf" or out.is_dir() or not out.suffix:
        hold_out_dir(out)  # a folder: checked writable and locked (once the source proved readable)
    return _WRITERS[target_format](model, out, f"{source_format}:{Path(source).name}")


def run(args: argparse.Namespace) -> int:
    path = convert(args.source_format, args.target_format, args.source, args.out)
    print(f"wrote {path}")
    return 0
