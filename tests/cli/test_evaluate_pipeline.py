"""`annofree evaluate` runs the official image pipeline by default; `annofree segment` keeps annofree's own."""

import argparse
import json

import pytest

from annofree import cli
from annofree.cli.common import add_image_pipeline_options, add_inference_options, segmenter_options
from annofree.errors import UserError
from tests.tiny import save_tiny_groupvit, write_noise_folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_groupvit(tmp_path_factory.mktemp("run")).parent


def annofree(monkeypatch, *argv) -> int:
    monkeypatch.setattr(cli, "COMMANDS", ["segment", "evaluate"])
    return cli.main([str(a) for a in argv])


def _settings(tmp_path, weights, monkeypatch, capsys, *options) -> dict:
    folder = write_noise_folder(tmp_path / "data", ["background", "cat", "dog"])
    out = tmp_path / "result.json"
    code = annofree(
        monkeypatch, "evaluate", "--weights", weights, "--data", folder, "--out", out, "--no-progress", *options
    )
    assert code == 0, capsys.readouterr().err
    return json.loads(out.read_text())["settings"]


def test_evaluate_defaults_to_the_official_pipeline(tmp_path, weights, monkeypatch, capsys):
    settings = _settings(tmp_path, weights, monkeypatch, capsys, "--short-side", 40)
    assert settings["resize"] == "official" and settings["max_long_side"] == 2048
    assert settings["patch_remainder"] == "drop" and settings["templates"] == "simple"


def test_evaluate_takes_annofrees_choices_when_asked(tmp_path, weights, monkeypatch, capsys):
    settings = _settings(
        tmp_path, weights, monkeypatch, capsys, "--short-side", 40, "--resize", "antialias",
        "--patch-remainder", "fit", "--max-long-side", 0, "--prompts", "ensemble",
    )  # fmt: skip
    assert settings["resize"] == "antialias" and settings["max_long_side"] is None
    assert settings["patch_remainder"] == "fit" and settings["templates"] == "full"


def _segment_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_inference_options(parser)
    add_image_pipeline_options(parser)
    return parser


def test_segment_keeps_annofrees_choices_unless_told():
    options = segmenter_options(_segment_parser().parse_args(["--weights", "w"]))
    assert not {"resize", "patch_remainder", "max_long_side"} & set(options)  # ZeroShotSegmenter's defaults
    given = _segment_parser().parse_args(
        ["--weights", "w", "--resize", "official", "--patch-remainder", "drop", "--max-long-side", "2048"]
    )
    options = segmenter_options(given)
    assert (options["resize"], options["patch_remainder"], options["max_long_side"]) == ("official", "drop", 2048)
    with pytest.raises(UserError, match="--max-long-side must be 0"):
        segmenter_options(_segment_parser().parse_args(["--weights", "w", "--max-long-side", "-1"]))


def test_help_says_which_command_uses_which_pipeline(monkeypatch, capsys):
    for command, expected in (
        ("segment", "default: the weights' inference.json, else antialias"),
        ("evaluate", "default: the protocol's, official"),
    ):
        with pytest.raises(SystemExit):
            annofree(monkeypatch, command, "--help")
        text = " ".join(capsys.readouterr().out.split())
        assert expected in text and "--patch-remainder" in text
