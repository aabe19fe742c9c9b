"""The zero-shot settings record, the file that keeps them beside the weights, and how each option is resolved."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import annofree
from annofree.errors import UserError
from annofree.inference import ZeroShotSegmenter
from annofree.inference.settings import (
    DEFAULTS,
    StoredSettings,
    ZeroShotSettings,
    describe_settings,
    parse_stored_settings,
    resolve_settings,
)
from annofree.weights import read_stored_settings, settings_path, write_stored_settings
from tests.tiny import save_tiny_groupvit

STORED = {"bg_rule": "similarity", "bg_thresh": 0.2, "short_side": 24, "flip": True, "topk": 2}


def test_settings_round_trip_through_dicts_and_the_file(tmp_path):
    settings = ZeroShotSettings(bg_rule="similarity", bg_thresh=-0.5, mode="slide", window=(24, 16), stride=8,
                                short_side=None, topk=None, flip=True, prompts="ensemble")  # fmt: skip
    assert ZeroShotSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    weights = save_tiny_groupvit(tmp_path / "run")
    path = write_stored_settings(weights, settings, synthetic=True)
    assert path == tmp_path / "run" / "inference.json" == settings_path(tmp_path / "run")
    stored = read_stored_settings(tmp_path / "run")
    assert stored.settings() == settings and stored.synthetic and stored.path == str(path)
    assert parse_stored_settings(stored.to_json(), "x") == StoredSettings(stored.values, True, "x")
    # Another weights file in the folder has a settings file of its own; none written: none read.
    assert settings_path(tmp_path / "run" / "other.safetensors") == tmp_path / "run" / "other.inference.json"
    assert read_stored_settings(tmp_path / "run" / "other.safetensors") is None


def test_the_file_may_give_some_settings_and_the_others_keep_their_defaults():
    stored = parse_stored_settings('{"zero_shot": {"bg_thresh": 1}}', "w/inference.json")
    assert stored.settings() == ZeroShotSettings(bg_thresh=1.0) and not stored.synthetic
    _, sources = resolve_settings(stored)
    assert sources["bg_thresh"] == "w/inference.json" and sources["mode"] == "defaults"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"zero_shot": {"bg_threshold": 0.2}}', "unknown zero-shot setting 'bg_threshold'"),
        ('{"zero_shot": {}, "synthetics": true}', "unknown key 'synthetics'"),
        ('{"zero_shot": {"bg_rule": "cosine"}}', "unknown background rule 'cosine'"),
        ('{"zero_shot": {"bg_thresh": -0.5}}', "bg_thresh must lie in [0, 1] with the affinity rule"),
        ('{"zero_shot": {"short_side": -3}}', "short_side must be a positive number of pixels"),
        ('{"zero_shot": {"window": "big"}}', "window must be a positive number of pixels"),
        ('{"zero_shot": {}, "synthetic": "yes"}', "synthetic must be true or false"),
        ('{"zero_shot": [1]}', "expected"),
        ("{nope", "not valid JSON"),
    ],
)
def test_a_bad_settings_file_is_a_one_line_error_naming_it(text, message):
    with pytest.raises(UserError) as error:
        parse_stored_settings(text, "run/inference.json")
    assert str(error.value).startswith("run/inference.json: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_options_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(UserError, match="unknown zero-shot setting 'threshold'"):
        resolve_settings(given={"threshold": 0.2})
    with pytest.raises(UserError, match="bg_thresh must lie in"):
        write_stored_settings(tmp_path / "run", {"bg_thresh": 3.0})
    assert not (tmp_path / "run" / "inference.json").exists()


def test_each_option_comes_from_what_is_given_else_the_file_else_the_defaults():
    stored = StoredSettings(STORED, synthetic=True, path="run/inference.json")
    settings, sources = resolve_settings(stored, {"bg_thresh": 0.3}, given_source="the command line")
    assert settings == ZeroShotSettings(**{**STORED, "bg_thresh": 0.3})
    assert sources["bg_thresh"] == "the command line" and sources["bg_rule"] == "run/inference.json"
    assert sources["prompts"] == "defaults"
    line = describe_settings(settings, sources)
    assert line == ("zero-shot settings -- from the command line: bg_thresh=0.3; from run/inference.json: "
                    "bg_rule=similarity short_side=24 topk=2 flip=on; defaults: mode=whole prompts=single "
                    "max_long_side=none resize=antialias patch_remainder=fit")  # fmt: skip
    # The given options are checked together with the file's: -0.5 is a cosine under the stored rule.
    assert resolve_settings(stored, {"bg_thresh": -0.5})[0].bg_thresh == -0.5


def test_weights_with_stored_settings_are_segmented_with_them(tmp_path):
    weights = save_tiny_groupvit(tmp_path / "run")
    plain = annofree.load(weights)
    assert plain.inference_settings is None
    write_stored_settings(tmp_path / "run", STORED, synthetic=True)
    model = annofree.load(tmp_path / "run")
    assert model.inference_settings.values == STORED and model.inference_settings.synthetic

    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    names = ["circle", "star", "heart"]
    from_file = ZeroShotSegmenter(model, names)
    assert from_file.settings == ZeroShotSettings(**STORED)
    explicit = ZeroShotSegmenter(plain, names, **STORED)
    default = ZeroShotSegmenter(plain, names)
    got = from_file.logits(image)
    assert got.shape[-2:] == (24, 34)  # short side 24, not the default 448
    torch.testing.assert_close(got, explicit.logits(image), rtol=0, atol=0)
    assert not torch.equal(from_file.segment(image).logits[:1], default.segment(image).logits[:1])

    # One option given overrides only that one.
    one = ZeroShotSegmenter(model, names, bg_thresh=0.5)
    assert one.settings == ZeroShotSettings(**{**STORED, "bg_thresh": 0.5})
    assert one.sources["bg_thresh"] == "the arguments"
    assert one.sources["flip"] == str(tmp_path / "run" / "inference.json")
    torch.testing.assert_close(one.logits(image), ZeroShotSegmenter(plain, names, **{**STORED, "bg_thresh": 0.5})
                               .logits(image), rtol=0, atol=0)  # fmt: skip
    # A settings record given replaces the file's.
    assert ZeroShotSegmenter(model, names, DEFAULTS).settings == DEFAULTS
    assert "inference.json: bg_thresh=0.2" in from_file.describe_settings()
    assert "from the arguments: bg_thresh=0.5" in one.describe_settings()


def test_the_folder_evaluation_starts_from_the_weights_settings(tmp_path):
    from annofree.evaluation.folder import evaluate_folder
    from tests.tiny import write_noise_folder

    folder = write_noise_folder(tmp_path / "data", ["background", "circle", "star"])
    write_stored_settings(save_tiny_groupvit(tmp_path / "run").parent, STORED)
    model = annofree.load(tmp_path / "run")
    plain = annofree.load(tmp_path / "run" / "model.safetensors")
    plain.inference_settings = None
    assert evaluate_folder(model, folder, progress=False) == evaluate_folder(plain, folder, progress=False, **STORED)
