"""The zero-shot options on the command line come from ZeroShotSettings's fields: one option per field, its default
shown from the field (written once), unset options left to the weights' settings file."""

from __future__ import annotations

import argparse

import pytest

from annofree.cli.common import add_image_pipeline_options, add_inference_options, flag, segmenter_options
from annofree.errors import UserError
from annofree.inference.settings import DEFAULTS, ZeroShotSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_inference_options(parser, onnx=True)
    add_image_pipeline_options(parser)
    return parser


def test_every_setting_is_one_option_unset_by_default_with_its_fields_default_in_the_help():
    parser = _parser()
    actions = {action.dest: action for action in parser._actions}
    for name, option in ZeroShotSettings.command_line().items():
        action = actions[name]
        assert action.option_strings[0] == flag(name) and action.default is None, name
        value = getattr(DEFAULTS, name)
        if value is not None and not isinstance(value, bool):
            assert f"else {value}" in action.help, (name, action.help)
        assert option.choices is None or tuple(action.choices) == tuple(option.choices)
    assert segmenter_options(parser.parse_args(["--weights", "w"])) == {}


def test_given_options_become_settings_and_zero_means_none_where_a_field_says_so():
    args = _parser().parse_args(
        [
            "--weights",
            "w",
            "--short-side",
            "0",
            "--max-long-side",
            "0",
            "--flip",
            "--topk",
            "3",
            "--bg-rule",
            "similarity",
        ]
    )
    options = segmenter_options(args)
    assert options == {"short_side": None, "max_long_side": None, "flip": True, "topk": 3, "bg_rule": "similarity"}
    assert ZeroShotSettings.from_dict(options | {"bg_thresh": 0.2}).max_long_side is None
    for argv, message in (
        (["--window", "0"], "--window must be positive, got 0"),
        (["--short-side", "-2"], "--short-side must be 0 (keep) or positive, got -2"),
        (["--max-long-side", "-1"], "--max-long-side must be 0 (no cap) or positive, got -1"),
    ):
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            segmenter_options(_parser().parse_args(["--weights", "w", *argv]))
