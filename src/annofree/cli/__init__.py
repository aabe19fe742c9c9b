"""The ``annofree`` command: a thin layer over the library. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

from annofree.errors import UserError

# Each module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = ["synth", "train", "segment", "evaluate", "convert", "export", "data", "demo", "report", "app"]


def build_parser() -> argparse.ArgumentParser:
    from annofree import __version__

    parser = argparse.ArgumentParser(prog="annofree", description="Semantic segmentation without pixel labels.")
    parser.add_argument("--version", action="version", version=f"annofree {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"annofree.cli.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"annofree: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("annofree: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
