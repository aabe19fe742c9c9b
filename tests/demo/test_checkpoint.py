"""Packing a run into the demo's starting checkpoint: half precision, unused token rows zeroed, same segmenter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import annofree
from annofree import cli
from annofree.demo import default_config_path
from annofree.demo.checkpoint import TOKEN_EMBEDDING, main, pack_run, trained_token_rows
from annofree.demo.recipes import load_demo_config, untrained_model
from annofree.engine.config import load_config
from annofree.errors import UserError
from annofree.inference.settings import ZeroShotSettings
from annofree.weights import load, load_into, read_stored_settings, read_weights
from tests.test_demo import GROUPVIT, TINY


def test_pack_keeps_the_trained_rows_and_what_the_model_computes(tmp_path):
    out = tmp_path / "demo_out"
    assert cli.main(["demo", *GROUPVIT, "--out", str(out), "--no-progress", *TINY]) == 0
    run = out / "groupvit"

    trained = trained_token_rows(run)
    assert 0 < int(trained.sum()) < 1000 < trained.numel()  # a few caption words out of CLIP's 49,408
    assert trained[49406] and trained[49407]  # start and end of text are in every caption

    kept = pack_run(run, tmp_path / "packed")
    assert kept == {"token_rows_kept": int(trained.sum()), "token_rows": trained.numel()}
    original, _, config = read_weights(run)
    packed, method, packed_config = read_weights(tmp_path / "packed")
    assert (method, packed_config) == ("groupvit", config) and set(packed) == set(original)
    assert all(t.dtype == torch.float16 for t in packed.values() if t.is_floating_point())
    rows = packed[TOKEN_EMBEDDING].float()
    assert torch.equal(rows[~trained], torch.zeros_like(rows[~trained]))
    torch.testing.assert_close(rows[trained], original[TOKEN_EMBEDDING][trained], atol=1e-3, rtol=1e-3)
    for name in ("config.yaml", "log.jsonl", "inference.json"):
        assert (tmp_path / "packed" / name).read_bytes() == (run / name).read_bytes()
    # A run from before inference.json existed: its settings come from the scores it was made with.
    (run / "inference.json").unlink()
    pack_run(run, tmp_path / "older")
    stored = read_stored_settings(tmp_path / "older")
    packed_settings = read_stored_settings(tmp_path / "packed").settings()
    assert stored.synthetic and stored.settings().bg_thresh == packed_settings.bg_thresh
    assert stored.settings().bg_rule == "similarity"  # the demo recipe's

    # The packed folder is a run directory: it loads (in float32) and computes what the run's weights do.
    before, after = load(run), load(tmp_path / "packed")
    assert next(after.parameters()).dtype == torch.float32
    pixels = torch.rand(2, 3, 32, 32)
    words = annofree.tokenize(["a photo of a circle."], context_length=32)
    with torch.no_grad():
        torch.testing.assert_close(after.encode_image(pixels), before.encode_image(pixels), atol=5e-3, rtol=0)
        torch.testing.assert_close(after.encode_text(words), before.encode_text(words), atol=5e-3, rtol=0)


def test_the_demo_starts_from_the_checkpoint_its_pretraining_recipe_made():
    """The committed checkpoint fits the demo's model and was trained by demo_pretrain.yaml as it stands now:
    change either recipe and this fails until `make reproduce-demo` has made a new checkpoint."""
    config = load_demo_config()
    start = Path(config["train"]["init_weights"])
    model = untrained_model(config)
    load_into(model, start, "groupvit")  # strict: every weight, every shape
    made_by = load_config(start / "config.yaml", defaults=None)
    recipe = load_demo_config(default_config_path("groupvit").parent / "demo_pretrain.yaml")
    for section in ("seed", "method", "model", "data", "loss", "optim", "demo"):
        assert made_by[section] == recipe[section], section
    assert {k: made_by["train"][k] for k in ("steps", "batch_size")} == {"steps": 3000, "batch_size": 64}
    assert json.loads((start / "results.json").read_text())["train_steps"] == 3000
    # It carries the settings it was scored with, so that `annofree segment --weights` uses them.
    evaluation = json.loads((start / "results.json").read_text())["evaluation"]
    stored = read_stored_settings(start)
    scored = ZeroShotSettings.from_dict({k: v for k, v in evaluation.items() if k != "classes"})
    assert stored.synthetic and stored.settings() == scored and scored.bg_rule == "similarity" and scored.flip


def test_pack_refuses_what_it_cannot_pack_with_one_line(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert cli.main(["demo", *GROUPVIT, "--out", str(out), "--no-progress", *TINY]) == 0
    (out / "groupvit" / "train_state.pt").unlink()
    with pytest.raises(UserError, match="no training state"):
        pack_run(out / "groupvit", tmp_path / "packed")
    with pytest.raises(SystemExit, match=r"^error: .*groupvit: no training state"):
        main([str(out / "groupvit"), str(tmp_path / "packed")])
    assert not (tmp_path / "packed").exists()  # nothing half-written
