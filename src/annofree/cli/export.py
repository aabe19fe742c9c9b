"""``annofree export``: part of a model for other code bases.

``export backbone``: a DenseSiam's ResNet for torchvision, detectron2 or mmdet (``--format``); the formats
and how to load each file are described in :mod:`annofree.interop.backbone`.

``export onnx``: a GroupViT as two ONNX models (image and text) and their ``onnx_config.json`` in the
``--out`` directory, for ``annofree segment --onnx DIR`` or any ONNX runtime (see :mod:`annofree.interop.onnx`).

Weights of the wrong kind are a one-line error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from annofree.cli import hold_out_dir
from annofree.errors import UserError
from annofree.interop.backbone import FORMATS


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export part of a model for other code bases (the DenseSiam backbone, GroupViT to ONNX)",
        description="backbone: the ResNet of DenseSiam weights as torchvision (plain state_dict, torch.save), "
        "detectron2 (.pkl with detectron2's names) or mmdet (state_dict under 'backbone.') weights. "
        "onnx: GroupViT weights as DIR/image.onnx (normalised pixels -> group embeddings and grouping maps, "
        "any batch and image size), DIR/text.onnx (token ids -> embeddings) and DIR/onnx_config.json, "
        "which `annofree segment --onnx DIR` runs with onnxruntime.",
    )
    parser.add_argument("what", choices=["backbone", "onnx"], help="what to export")
    parser.add_argument("--weights", required=True, help="a run directory or a .safetensors file")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, help="backbone only, required there: target code base")
    parser.add_argument(
        "--out", required=True, help="backbone: output file (.pkl for detectron2, e.g. .pth otherwise); onnx: directory"
    )
    parser.add_argument("--opset", type=int, default=None, help="onnx only: ONNX opset version (default 17)")
    return parser


def run(args: argparse.Namespace) -> int:
    from annofree.pretrained import load

    if args.what == "onnx":
        if args.fmt is not None:
            raise UserError("--format is for `annofree export backbone`; `export onnx` writes ONNX files")
        return _export_onnx(load(args.weights), args)
    if args.fmt is None:
        raise UserError(f"export backbone needs --format ({', '.join(FORMATS)})")
    if args.opset is not None:
        raise UserError("--opset is for `annofree export onnx`")
    return _export_backbone(load(args.weights), args)


def _export_backbone(model, args: argparse.Namespace) -> int:
    from annofree.interop.backbone import detectron2_config_hint, export_backbone
    from annofree.models.densesiam import DenseSiam

    if not isinstance(model, DenseSiam):
        raise UserError(f"{args.weights}: backbone export needs DenseSiam weights, not {type(model).__name__}")
    path = export_backbone(model, args.fmt, args.out)
    print(f"wrote {path} ({model.config.backbone}, {len(model.backbone.state_dict())} tensors, {args.fmt} names)")
    if args.fmt == "detectron2":
        print("detectron2 config for these weights:\n" + detectron2_config_hint(model, path))
    return 0


def _export_onnx(model, args: argparse.Namespace) -> int:
    from annofree.interop.onnx import DEFAULT_OPSET, export_onnx
    from annofree.models import GroupViT

    if not isinstance(model, GroupViT):
        raise UserError(f"{args.weights}: ONNX export needs GroupViT weights, not {type(model).__name__}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory (onnx export writes a directory)")
    hold_out_dir(out)
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    for path in export_onnx(model, out, opset=opset):
        size = path.stat().st_size
        print(f"wrote {path} ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"wrote {path} ({size / 2**10:.1f} KiB)")
    print(f"zero-shot segmentation with onnxruntime: annofree segment IMAGE --onnx {out} --classes ... --out DIR")
    return 0
