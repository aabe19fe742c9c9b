"""``OUT/index.html``: one page over what ``annofree demo`` wrote, to open in a browser.

A small table of both methods' ``results.json`` (scores beside their baselines, training size and time), then per
run its training curves (``curves.png``), its overlays of held-out scenes (``scene_*.png``: image | prediction |
ground truth) and links to its files. Paths are relative, so the folder can be moved or archived as a whole.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from annofree.io import atomic_write

INDEX_NAME = "index.html"
RUN_ORDER = ("groupvit", "densesiam", "groupvit_scratch")
# results.json keys shown in the table: key, row name, format.
METRICS = (
    ("miou", "mIoU on held-out scenes", "{:.3f}"),
    ("miou_random_init", "mIoU, untrained network (DenseSiam: k-means on its features)", "{:.3f}"),
    ("miou_random_init_native", "mIoU, k-means on untrained features at the scenes' own size", "{:.3f}"),
    ("miou_kmeans_pixels", "mIoU, k-means on pixel colours", "{:.3f}"),
    ("eval_short_side", "scored at short side", "{} px"),
    ("miou_init_weights", "mIoU, starting checkpoint", "{:.3f}"),
    ("pixel_accuracy", "pixel accuracy", "{:.3f}"),
    ("num_clusters", "clusters", "{}"),
    ("val_images", "held-out scenes", "{}"),
    ("train_steps", "training steps", "{}"),
    ("train_images", "training images (no masks)", "{}"),
    ("train_seconds", "training time", "{:.0f} s"),
    ("loss_first", "loss, first log", "{:.3f}"),
    ("loss_last", "loss, last log", "{:.3f}"),
    ("total_seconds", "demo time", "{:.0f} s"),
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; margin: 4px 0; }
.scenes img { display: block; }
"""


def _runs(out: Path) -> list[Path]:
    """Run directories under ``out`` (those holding results.json or log.jsonl), the demo's main runs first."""
    found = [
        p
        for p in sorted(out.iterdir())
        if p.is_dir() and ((p / "results.json").is_file() or (p / "log.jsonl").is_file())
    ]
    return sorted(found, key=lambda p: (RUN_ORDER.index(p.name) if p.name in RUN_ORDER else len(RUN_ORDER), p.name))


def _results(run: Path) -> dict[str, Any] | None:
    try:
        results = json.loads((run / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "&ndash;"
    try:
        return html.escape(fmt.format(value))
    except (TypeError, ValueError):
        return html.escape(str(value))


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """The metrics of each run's results.json side by side (rows no run has are left out)."""
    names = list(results)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    rows = []
    for key, label, fmt in METRICS:
        if all(results[name].get(key) is None for name in names):
            continue
        cells = "".join(f'<td class="num">{_cell(results[name].get(key), fmt)}</td>' for name in names)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _link(out: Path, path: Path) -> str:
    rel = html.escape(path.relative_to(out).as_posix(), quote=True)
    return f'<a href="{rel}">{html.escape(path.name)}</a>'


def _image(out: Path, path: Path, alt: str) -> str:
    rel = html.escape(path.relative_to(out).as_posix(), quote=True)
    return f'<a href="{rel}"><img src="{rel}" alt="{html.escape(alt, quote=True)}" loading="lazy"></a>'


def render_index(out: str | Path) -> str:
    """The page's HTML for the demo output folder ``out``."""
    out = Path(out)
    runs = _runs(out) if out.is_dir() else []
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', "<title>annofree demo</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>annofree demo</h1>"]  # fmt: skip
    results = {run.name: r for run in runs if (r := _results(run)) is not None}
    if results:
        parts.append("<h2>Results</h2>")
        parts.append(results_table(results))
    elif not runs:
        parts.append("<p>No run here yet: <code>annofree demo</code> writes its runs into this folder.</p>")
    for run in runs:
        parts.append(f'<h2 id="{html.escape(run.name, quote=True)}">{html.escape(run.name)}</h2>')
        files = [run / name for name in ("results.json", "log.jsonl", "config.yaml", "model.safetensors")]
        links = " &middot; ".join(_link(out, path) for path in files if path.is_file())
        if links:
            parts.append(f"<p>{links}</p>")
        if (run / "curves.png").is_file():
            parts.append("<h3>Training curves</h3>")
            parts.append(_image(out, run / "curves.png", f"{run.name} training curves"))
        scenes = sorted(run.glob("scene_*.png"))
        if scenes:
            parts.append("<h3>Held-out scenes: image | prediction | ground truth</h3>")
            parts.append('<div class="scenes">' + "".join(_image(out, p, p.stem) for p in scenes) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_index(out: str | Path) -> Path:
    """Write ``OUT/index.html`` (atomically) and return its path."""
    path = Path(out) / INDEX_NAME
    text = render_index(out)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


__all__ = ["INDEX_NAME", "render_index", "results_table", "write_index"]
