"""curves.png: written by every run at its checkpoints and at the end, never stopping it; `annofree report`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree import cli
from annofree.engine.curves import CURVES_NAME, format_summary, loss_keys, plot_curves, summarize
from annofree.engine.logging import RunLogger
from annofree.engine.trainer import train
from annofree.errors import UserError

from .toy_method import toy_config

DENSESIAM_RECORDS = [
    {"step": s, "epoch": 0, "lr": 0.01 * min(s, 3) / 3, "loss": 2.0 / s, "loss_pix": -0.5 / s, "loss_seg": 1.0,
     "std_pix": 0.9, "cluster_usage": 0.5 + 0.1 * s, "images_per_s": 10.0 * s, "elapsed_s": 2.0 * s}
    for s in range(1, 5)
]  # fmt: skip


def test_every_run_writes_curves_at_its_checkpoints_and_at_the_end(tmp_path: Path, monkeypatch) -> None:
    import annofree.engine.curves as curves

    drawn = []
    real = curves.write_curves
    monkeypatch.setattr(curves, "write_curves", lambda run_dir, records: drawn.append(real(run_dir, records)))
    config = toy_config(train={"steps": 5, "log_every": 1, "save_every": 2})
    train(config, tmp_path / "run", data="toy")
    assert drawn == [tmp_path / "run" / CURVES_NAME] * 3  # saves at steps 2, 4 and 5; nothing new at the end
    picture = Image.open(tmp_path / "run" / CURVES_NAME)
    assert picture.format == "PNG" and picture.width > 2 * picture.height  # losses | learning rate


def test_a_run_stopped_by_a_nan_still_gets_its_curves(tmp_path: Path) -> None:
    config = toy_config(train={"steps": 6, "log_every": 1, "save_every": 0}, toy={"nan_from": 3})
    with pytest.raises(UserError, match="is nan"):
        train(config, tmp_path / "run", data="toy")
    assert (tmp_path / "run" / CURVES_NAME).is_file()  # no checkpoint yet, but the log up to the NaN is plotted


def test_a_failing_plot_is_reported_and_training_goes_on(tmp_path: Path, monkeypatch, capsys) -> None:
    def broken(run_dir, records):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr("annofree.engine.curves.write_curves", broken)
    result = train(toy_config(train={"steps": 3, "log_every": 1}), tmp_path / "run", data="toy")
    assert result.step == 3 and not (tmp_path / "run" / CURVES_NAME).exists()
    printed = capsys.readouterr()
    assert "warning: could not draw curves.png (RuntimeError: no fonts today)" in printed.out + printed.err


def test_other_ranks_draw_nothing(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path / "run", total_steps=2, enabled=False)
    logger.log({"step": 1, "loss": 1.0})
    logger.write_curves()
    logger.close()
    assert not (tmp_path / "run").exists()


def test_the_collapse_monitor_gets_a_panel_and_nan_is_drawn_as_a_gap(tmp_path: Path) -> None:
    records = [*DENSESIAM_RECORDS, {"step": 5, "lr": 0.01, "loss": "nan", "loss_pix": "inf", "std_pix": 0.0}]
    three = Image.open(plot_curves(records, tmp_path / "ds.png"))
    two = Image.open(plot_curves([{k: v for k, v in r.items() if k != "std_pix" and k != "cluster_usage"}
                                  for r in records], tmp_path / "gv.png"))  # fmt: skip
    assert three.height == two.height and three.width == pytest.approx(1.5 * two.width, rel=0.02)
    assert len(np.unique(np.asarray(three.convert("RGB")).reshape(-1, 3), axis=0)) > 20  # something is drawn
    assert loss_keys(records) == ["loss", "loss_pix", "loss_seg"]


def test_summary_of_a_run() -> None:
    summary = summarize(DENSESIAM_RECORDS, total_steps=10)
    assert summary["step"] == 4 and summary["total_steps"] == 10 and summary["records"] == 4
    assert summary["losses"]["loss"] == {"first": 2.0, "final": 0.5, "min": 0.5, "min_step": 4}
    assert summary["losses"]["loss_pix"]["min"] == -0.5 and summary["losses"]["loss_pix"]["min_step"] == 1
    assert summary["lr"] == {"peak": 0.01, "final": 0.01}
    assert summary["images_per_s"] == pytest.approx(30.0)  # the first (warm-up) window left out: 20, 30, 40
    assert summary["elapsed_s"] == 8.0 and summary["monitor"] == {"std_pix": 0.9, "cluster_usage": 0.9}
    text = format_summary(summary)
    assert "steps: 4/10" in text and "loss: final 0.5 (first 2, min 0.5 at step 4)" in text
    assert "lr: peak 0.01, final 0.01" in text and "images/s: 30.0" in text and "time: 8s of training" in text
    with pytest.raises(UserError, match="no record"):
        summarize([])


def test_report_redraws_the_curves_and_prints_the_summary(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    train(toy_config(train={"steps": 4, "log_every": 1}), run, data="toy")
    (run / CURVES_NAME).unlink()
    capsys.readouterr()
    assert cli.main(["report", str(run)]) == 0
    printed = capsys.readouterr().out
    assert (run / CURVES_NAME).is_file()
    assert "steps: 4/4" in printed and "loss_mse: final" in printed and "images/s:" in printed
    assert "time:" in printed and f"curves: {run / CURVES_NAME}" in printed

    assert cli.main(["report", str(run / "log.jsonl"), "--out", str(tmp_path / "mine.png"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 4 and summary["curves"] == str(tmp_path / "mine.png")
    assert (tmp_path / "mine.png").is_file()


def test_report_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no log.jsonl here" in capsys.readouterr().err
    (tmp_path / "log.jsonl").write_text("")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no log record yet" in capsys.readouterr().err
