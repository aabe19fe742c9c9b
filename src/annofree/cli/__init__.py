"""The ``annofree`` command: a thin layer over the library. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from annofree.errors import UserError
from annofree.folders import FolderLock, open_out_dir

# Each module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = ["synth", "train", "segment", "evaluate", "convert", "export", "data", "demo", "report", "app"]


_held_out_dirs: list[FolderLock] = []


def hold_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """The output folder of this command, created, checked writable and locked until the command ends."""
    _held_out_dirs.append(open_out_dir(path, flag))
    return Path(path)


def release_out_dirs() -> None:
    while _held_out_dirs:
        _held_out_dirs.pop().release()


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
    except KeyboardInterrupt as exc:  # a training run's Interrupted says what it saved and its exit code
        print(f"annofree: {exc or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    finally:
        release_out_dirs()


if __name__ == "__main__":
    sys.exit(main())
