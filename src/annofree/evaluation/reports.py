"""Evaluation reports: ``result.json`` with a Markdown table beside it, and saved predictions.

``write_report(path, record)`` writes the JSON record and ``path.with_suffix(".md")``: a per-class IoU
table, the summary metrics, the scores without background (VOC20, Context59), things/stuff and the linear
probe when the record has them. ``PredictionWriter`` is the ``on_result`` hook of the evaluators: it writes each image's
label PNG and a colour overlay with a legend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from annofree.errors import UserError


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _class_table(results: dict[str, Any]) -> list[str]:
    accuracy = results.get("per_class_accuracy", {})
    lines = ["| class | IoU % | accuracy % |", "| --- | ---: | ---: |"]
    for name, iou in results["per_class_iou"].items():
        lines.append(f"| {name} | {_percent(iou)} | {_percent(accuracy.get(name))} |")
    return lines


def _summary(results: dict[str, Any]) -> list[str]:
    return [
        f"- mIoU: **{_percent(results.get('miou'))} %**",
        f"- pixel accuracy: {_percent(results.get('pixel_accuracy'))} %",
        f"- mean accuracy: {_percent(results.get('mean_accuracy'))} %",
    ]


def markdown_report(record: dict[str, Any], title: str = "Evaluation") -> str:
    """The record as Markdown: headline metrics, the per-class table, variants and groups."""
    lines = [f"# {title}", ""]
    facts = [f"{key}: `{record[key]}`" for key in ("dataset", "weights", "data") if record.get(key)]
    facts.append(f"{record.get('num_images', 0)} images, {record.get('num_pixels', 0)} labelled pixels")
    if record.get("skipped"):
        facts.append(f"{record['skipped']} unreadable samples skipped")
    lines += [f"- {fact}" for fact in facts] + _summary(record) + ["", *_class_table(record)]
    variant = record.get("without_background")
    if variant:
        lines += ["", "## Without background", "", *_summary(variant), "", *_class_table(variant)]
    for name, group in (record.get("groups") or {}).items():
        lines += ["", f"## {name}", "", *_summary(group)]
    probe = record.get("linear_probe")
    if probe:
        lines += ["", "## Linear probe", "", f"- trained on {probe['probe']['train_images']} labelled images",
                  *_summary(probe), "", *_class_table(probe)]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, record: dict[str, Any], title: str = "Evaluation") -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the Markdown table next to it (``.md``), atomically; returns both paths."""
    from annofree.io import atomic_write

    path = Path(path)
    markdown = path.with_suffix(".md")
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
        atomic_write(markdown, lambda tmp: Path(tmp).write_text(markdown_report(record, title), encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"--out {path}: cannot write ({exc.strerror or exc})") from None
    return path, markdown


class PredictionWriter:
    """Writes ``DIR/NAME.png`` (uint8 label ids) and ``DIR/NAME_overlay.png`` for every evaluated image."""

    def __init__(self, directory: str | Path, alpha: float = 0.5):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"--save-predictions {self.directory}: exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.alpha = alpha
        self.count = 0

    def write(self, name: str, image: np.ndarray, label_map: np.ndarray, names: list[str]) -> None:
        from annofree.io import atomic_write
        from annofree.viz import overlay

        stem = name.replace("/", "__")  # sample names are stems; nested ones (Cityscapes' city/) flattened
        ids = Image.fromarray(np.asarray(label_map).astype(np.uint8))
        atomic_write(self.directory / f"{stem}.png", lambda tmp: ids.save(tmp, format="PNG"))
        picture = overlay(image, np.asarray(label_map), names, alpha=self.alpha)
        atomic_write(self.directory / f"{stem}_overlay.png", lambda tmp: picture.save(tmp, format="PNG"))
        self.count += 1

    def __call__(self, name: str, image: np.ndarray, label: np.ndarray, result: Any) -> None:
        """``on_result`` hook of the zero-shot evaluator (``result`` is a ``SegmentationResult``)."""
        self.write(name, image, result.label_map, result.class_names)


__all__ = ["PredictionWriter", "markdown_report", "write_report"]
