"""result.json with its Markdown table, and saved predictions."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from PIL import Image

from annofree.evaluation.reports import PredictionWriter, markdown_report, write_report

RECORD = {
    "dataset": "voc",
    "miou": 0.5,
    "pixel_accuracy": 0.75,
    "mean_accuracy": None,
    "per_class_iou": {"background": 0.5, "cat": None, "dog": 0.25},
    "per_class_accuracy": {"background": 1.0, "cat": None, "dog": 0.5},
    "num_images": 3,
    "num_pixels": 320,
    "skipped": 1,
    "without_background": {
        "miou": 0.25,
        "pixel_accuracy": 0.5,
        "mean_accuracy": 0.5,
        "per_class_iou": {"cat": None, "dog": 0.25},
        "per_class_accuracy": {"cat": None, "dog": 0.5},
    },
}


def test_markdown_lists_every_class_and_both_variants():
    text = markdown_report(RECORD, "VOC")
    assert text.startswith("# VOC")
    assert "| dog | 25.00 | 50.00 |" in text and "| cat | n/a | n/a |" in text
    assert "mIoU: **50.00 %**" in text and "## Without background" in text and "mIoU: **25.00 %**" in text
    assert "1 unreadable samples skipped" in text


def test_write_report_writes_json_and_markdown(tmp_path):
    json_path, md_path = write_report(tmp_path / "out" / "result.json", RECORD)
    assert json.loads(json_path.read_text()) == RECORD
    assert md_path == tmp_path / "out" / "result.md" and "| background | 50.00 | 100.00 |" in md_path.read_text()


def test_prediction_writer_writes_ids_and_an_overlay(tmp_path):
    writer = PredictionWriter(tmp_path / "pred")
    label_map = np.zeros((6, 8), dtype=np.int64)
    label_map[:, 4:] = 2
    result = SimpleNamespace(label_map=label_map, class_names=["background", "cat", "dog"])
    writer("frankfurt/f_000001", np.zeros((6, 8, 3), np.uint8), label_map, result)
    ids = np.asarray(Image.open(tmp_path / "pred" / "frankfurt__f_000001.png"))
    assert ids.dtype == np.uint8 and (ids == label_map).all()
    assert (tmp_path / "pred" / "frankfurt__f_000001_overlay.png").is_file() and writer.count == 1
