"""``annofree export backbone``: a DenseSiam's ResNet for torchvision, detectron2 or mmdet.

The formats and how to load each file are described in :mod:`annofree.interop.backbone`. Only DenseSiam
weights have a ResNet backbone; anything else is a one-line error.
"""

from __future__ import annotations

import argparse

from annofree.errors import UserError
from annofree.interop.backbone import FORMATS


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export part of a model for other code bases (the DenseSiam backbone)",
        description="Export the ResNet backbone of DenseSiam weights: torchvision (plain state_dict, "
        "torch.save), detectron2 (.pkl with detectron2's names) or mmdet (state_dict under 'backbone.').",
    )
    parser.add_argument("what", choices=["backbone"], help="what to export")
    parser.add_argument("--weights", required=True, help="DenseSiam weights: a run directory or a .safetensors file")
    parser.add_argument("--format", dest="fmt", required=True, choices=FORMATS, help="target code base")
    parser.add_argument("--out", required=True, help="output file (.pkl for detectron2, e.g. .pth otherwise)")
    return parser


def run(args: argparse.Namespace) -> int:
    from annofree.interop.backbone import detectron2_config_hint, export_backbone
    from annofree.models.densesiam import DenseSiam
    from annofree.weights import load

    model = load(args.weights)
    if not isinstance(model, DenseSiam):
        raise UserError(f"{args.weights}: backbone export needs DenseSiam weights, not {type(model).__name__}")
    path = export_backbone(model, args.fmt, args.out)
    print(f"wrote {path} ({model.config.backbone}, {len(model.backbone.state_dict())} tensors, {args.fmt} names)")
    if args.fmt == "detectron2":
        print("detectron2 config for these weights:\n" + detectron2_config_hint(model, path))
    return 0
