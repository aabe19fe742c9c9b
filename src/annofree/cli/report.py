"""``annofree report RUN``: redraw RUN/curves.png from RUN/log.jsonl and print the run's summary.

The summary: steps done (of ``train.steps`` when RUN/config.yaml holds it), each loss's final, first and
minimum value, the peak and final learning rate, images per second (the first log window, which holds the
warm-up, left out), training time and, for DenseSiam, the last values of the collapse monitor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="plot a training run's curves (curves.png) and print its summary",
        description="Redraw RUN/curves.png from RUN/log.jsonl and print the run's summary: steps done, each loss's "
        "final, first and minimum value, the peak and final learning rate, images per second (warm-up left out), "
        "training time and, for DenseSiam, the last values of the collapse monitor.",
    )
    parser.add_argument("run", metavar="RUN", help="a run directory (holding log.jsonl), or a log.jsonl file")
    parser.add_argument("--out", default=None, help="where to write the plot (default RUN/curves.png)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _total_steps(run_dir: Path) -> int | None:
    from annofree.engine.checkpoint import CONFIG_NAME
    from annofree.engine.config import load_config

    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        steps = (load_config(path, defaults=None).get("train") or {}).get("steps")
    except Exception:  # a damaged config only costs the "of N steps"
        return None
    return steps if isinstance(steps, int) else None


def run(args: argparse.Namespace) -> int:
    from annofree.engine.curves import CURVES_NAME, format_summary, plot_curves, summarize
    from annofree.engine.logging import LOG_NAME, read_log
    from annofree.errors import UserError

    path = Path(args.run)
    run_dir, log_path = (path.parent, path) if path.is_file() else (path, path / LOG_NAME)
    if not log_path.is_file():
        raise UserError(f"{path}: no {LOG_NAME} here (give a run directory written by `annofree train`)")
    records = read_log(log_path)
    if not records:
        raise UserError(f"{log_path}: no log record yet")
    out = Path(args.out) if args.out else run_dir / CURVES_NAME
    try:
        plot_curves(records, out, title=run_dir.resolve().name)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the plot ({exc.strerror or exc})") from None
    summary = summarize(records, _total_steps(run_dir))
    if args.json:
        print(json.dumps({**summary, "curves": str(out)}, indent=2))
    else:
        print(f"run: {run_dir}")
        print(format_summary(summary))
        print(f"curves: {out}")
    return 0
