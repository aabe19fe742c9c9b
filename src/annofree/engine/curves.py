"""Training plots and summaries from a run's ``log.jsonl``: ``curves.png`` and the text of ``annofree report``.

``curves.png`` holds one panel per kind of record: the losses (``loss`` and each ``loss_*``), the learning rate
and, when the method logs it, DenseSiam's collapse monitor (``std_pix`` / ``std_global``: about 1 when the
outputs are spread out, 0 when collapsed; ``cluster_usage``: the share of clusters that win some pixel).
The trainer rewrites it at every checkpoint and at the end (:meth:`RunLogger.write_curves`); matplotlib draws
with its Agg canvas, without pyplot, so nothing needs a display and nothing global changes.

This module reads no file: it is handed the records (``RunLogger`` hands its own; ``annofree report`` reads
``log.jsonl`` with :func:`annofree.engine.logging.read_log`)::

    records = read_log("runs/tiny/log.jsonl")
    plot_curves(records, "runs/tiny/curves.png")
    print(format_summary(summarize(records)))

>>> print(format_summary(summarize([{"step": 1, "loss": 2.0, "lr": 1e-3}, {"step": 2, "loss": 1.5, "lr": 5e-4}])))
steps: 2 (epoch None, 2 log records)
loss: final 1.5 (first 2, min 1.5 at step 2)
lr: peak 0.001, final 0.0005
time: ? of training
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annofree.errors import UserError

CURVES_NAME = "curves.png"
COLLAPSE_KEYS = ("std_pix", "std_global", "cluster_usage")


def _number(value: Any) -> float | None:
    """A logged number as a float (NaN and infinities are logged as strings); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of ``key`` over the records that hold it (non-finite values kept as NaN/inf)."""
    steps, values = [], []
    for record in records:
        value = _number(record.get(key))
        if value is not None and isinstance(record.get("step"), int):
            steps.append(record["step"])
            values.append(value)
    return steps, values


def loss_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """``loss`` first, then the components in the order they first appear."""
    keys: list[str] = []
    for record in records:
        keys.extend(k for k in record if k.startswith("loss") and k not in keys and _number(record[k]) is not None)
    return sorted(keys, key=lambda k: (k != "loss", keys.index(k)))


def _legend_below(ax) -> None:
    """The legend under the panel, where it hides no curve."""
    handles = ax.get_legend_handles_labels()[0]
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(handles)), frameon=False)


def plot_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Draw the losses, the learning rate and (when logged) the collapse monitor into ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from annofree.io import atomic_write

    losses = loss_keys(records)
    monitor = [k for k in COLLAPSE_KEYS if series(records, k)[0]]
    panels = ["losses", "lr"] + (["monitor"] if monitor else [])
    figure = Figure(figsize=(4.6 * len(panels), 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("step")
        if panel == "losses":
            for key in losses:
                steps, values = series(records, key)
                ax.plot(
                    steps,
                    values,
                    label=key,
                    linewidth=2.0 if key == "loss" else 1.2,
                    marker="." if len(steps) < 30 else None,
                )
            finite = [v for k in losses for v in series(records, k)[1] if math.isfinite(v)]
            if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
                ax.set_yscale("log")
            ax.set_title("losses")
            if losses:
                _legend_below(ax)
        elif panel == "lr":
            steps, values = series(records, "lr")
            ax.plot(steps, values, color="tab:purple", marker="." if len(steps) < 30 else None)
            ax.set_title("learning rate")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
        else:
            for key in monitor:
                steps, values = series(records, key)
                ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
            ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
            ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
            ax.set_title("collapse monitor (1 healthy, 0 collapsed)")
            _legend_below(ax)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.15))
    return path


def write_curves(run_dir: str | Path, records: Sequence[dict[str, Any]]) -> Path | None:
    """``RUN/curves.png`` from the run's log records (the run logger's); None when there is no record yet."""
    run_dir = Path(run_dir)
    if not records:
        return None
    return plot_curves(records, run_dir / CURVES_NAME, title=run_dir.resolve().name)


def summarize(records: Sequence[dict[str, Any]], total_steps: int | None = None) -> dict[str, Any]:
    """Steps, final and minimum losses, learning rate, throughput and time of a run's records."""
    if not records:
        raise UserError("the log holds no record")
    last = records[-1]
    summary: dict[str, Any] = {"step": last.get("step"), "total_steps": total_steps, "epoch": last.get("epoch")}
    summary["records"] = len(records)
    losses = {}
    for key in loss_keys(records):
        steps, values = series(records, key)
        finite = [(v, s) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
        best = min(finite) if finite else (math.nan, None)
        losses[key] = {"first": values[0], "final": values[-1], "min": best[0], "min_step": best[1]}
    summary["losses"] = losses
    _, lrs = series(records, "lr")
    summary["lr"] = {"peak": max(lrs), "final": lrs[-1]} if lrs else None
    _, speeds = series(records, "images_per_s")
    # The first window holds the warm-up (first batches, lazy initialisation): left out when there are others.
    steady = speeds[1:] if len(speeds) > 1 else speeds
    summary["images_per_s"] = sum(steady) / len(steady) if steady else None
    summary["elapsed_s"] = _number(last.get("elapsed_s"))
    for key in COLLAPSE_KEYS:
        _, values = series(records, key)
        if values:
            summary.setdefault("monitor", {})[key] = values[-1]
    return summary


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few lines of text (what ``annofree report`` prints)."""
    of = f"/{summary['total_steps']}" if summary.get("total_steps") else ""
    lines = [f"steps: {summary['step']}{of} (epoch {summary['epoch']}, {summary['records']} log records)"]
    for key, loss in summary["losses"].items():
        lines.append(
            f"{key}: final {loss['final']:.4g} (first {loss['first']:.4g}, min {loss['min']:.4g} at step "
            f"{loss['min_step']})"
        )
    if summary["lr"]:
        lines.append(f"lr: peak {summary['lr']['peak']:.3g}, final {summary['lr']['final']:.3g}")
    if summary["images_per_s"] is not None:
        lines.append(f"images/s: {summary['images_per_s']:.1f}")
    lines.append(f"time: {_duration(summary['elapsed_s'])} of training")
    for key, value in (summary.get("monitor") or {}).items():
        lines.append(f"{key}: {value:.3g} (final)")
    return "\n".join(lines)


__all__ = ["COLLAPSE_KEYS", "CURVES_NAME", "format_summary", "loss_keys", "plot_curves", "series", "summarize",
           "write_curves"]  # fmt: skip
