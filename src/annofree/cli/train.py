"""``annofree train METHOD --config FILE|NAME [--data PATTERN] --out DIR [--resume] [key=value ...]``.

Examples::

    annofree train groupvit --config groupvit/synth_tiny --data 'shards/{000000..000009}.tar' \\
        --out runs/tiny optim.lr=1e-3 train.steps=2000
    torchrun --nproc_per_node=4 -m annofree train groupvit --config c.yaml --data ... --out runs/x
    annofree train groupvit --out runs/tiny --resume          # the saved config.yaml and data, continued exactly
    torchrun --max-restarts 3 ... -m annofree train groupvit --config c.yaml --out runs/x --auto-resume

Ctrl-C (SIGINT) or SIGTERM saves a checkpoint at the next step boundary and exits with 130 or 143; a
second signal stops at once. ``--auto-resume`` resumes when --out holds a checkpoint and starts fresh when it
does not, so the one command that torchrun (``--max-restarts``) or a batch scheduler repeats after a failure
continues the run instead of being refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from annofree.engine.checkpoint import CONFIG_NAME, has_state
from annofree.engine.config import load_config, packaged_configs
from annofree.errors import UserError


class _OverridesParser(argparse.ArgumentParser):
    """Collects ``key=value`` words wherever they appear.

    argparse consumes a ``nargs="*"`` positional together with the positional before it, so overrides
    written after the options would otherwise be rejected as unrecognised.
    """

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        words = [w for w in extras if "=" in w and not w.startswith("-")]
        namespace.overrides = [*(getattr(namespace, "overrides", None) or []), *words]
        return namespace, [w for w in extras if w not in words]


def _epilog() -> str:
    configs = packaged_configs()
    methods = sorted({name.split("/")[0] for name in configs})
    return (
        f"Methods: {', '.join(methods)}. Packaged configs (--config NAME, or a YAML file of your own): "
        f"{', '.join(configs)}. Overrides: key.sub=value (value parsed as YAML); +key.sub=value adds a key the "
        "config lacks. Ctrl-C or SIGTERM saves a checkpoint at the next step and exits (130 / 143); --resume "
        "continues it; a second signal stops at once."
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a method (GroupViT, ...) on your data",
        description="Train a method. Launch under torchrun for several GPUs; resume exactly with --resume.",
        epilog=_epilog(),
    )
    parser.__class__ = _OverridesParser
    parser.add_argument("method", metavar="METHOD", help="method name (must match the config's `method`)")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE|NAME",
        help="YAML config, or a packaged one by name such as groupvit/synth_tiny (optional with --resume: "
        "the run's config.yaml); relative paths inside it are relative to the file",
    )
    parser.add_argument(
        "--data",
        metavar="PATTERN",
        help="training data, e.g. 'shards/{000000..000099}.tar', 'pipe:CMD', 'https://host/{0..9}.tar', "
        "'s3://bucket/{0..9}.tar', sources joined with '::' (else train.data; a resumed run remembers it)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="run directory: weights, config, logs, state"
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    resume.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue the run in --out when it holds a checkpoint, else start it: for commands that a launcher "
        "repeats after a failure (torchrun --max-restarts, a requeued batch job)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def resolve_config(args: argparse.Namespace) -> dict:
    """The config file (or, for --resume without --config, the run's saved one) with the overrides applied."""
    if args.config is not None:
        config = load_config(args.config, args.overrides)
    elif args.resume or (args.auto_resume and has_state(args.out)):
        saved = args.out / CONFIG_NAME
        if not saved.is_file():
            raise UserError(f"{args.out}: no {CONFIG_NAME} to resume from; give --config")
        config = load_config(saved, args.overrides)
    else:
        raise UserError("--config is required (except with --resume, or --auto-resume on a saved run)")
    if config.get("method") is None:
        config["method"] = args.method
    elif config["method"] != args.method:
        raise UserError(f"method {args.method!r} does not match the config's method {config['method']!r}")
    return config


def run(args: argparse.Namespace) -> int:
    from annofree.engine.trainer import train  # torch and the methods load only when training

    train(resolve_config(args), args.out, data=args.data, resume="auto" if args.auto_resume else args.resume)
    return 0
