"""YAML configs: _base_ inheritance, dotted overrides, engine defaults and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from annofree.engine.config import (
    ENGINE_DEFAULTS,
    apply_overrides,
    load_config,
    merge,
    parse_value,
    resolve_engine_config,
    save_config,
)
from annofree.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merge_is_deep_for_dicts_and_replaces_everything_else() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = merge(base, {"a": {"y": [3]}, "c": {"z": 0}})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": {"z": 0}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # inputs untouched


def test_base_files_chain_relative_to_each_file(tmp_path: Path) -> None:
    _write(tmp_path / "common" / "root.yaml", "model: {width: 64, depth: 2}\noptim: {lr: 1.0e-3}\nname: root\n")
    _write(tmp_path / "common" / "data.yaml", "data: {size: 32}\nname: data\n")
    child = _write(
        tmp_path / "exp" / "child.yaml",
        "_base_: [../common/root.yaml, ../common/data.yaml]\nmodel: {depth: 4}\ntrain: {steps: 5}\n",
    )
    config = load_config(child, defaults=None)
    assert config == {
        "model": {"width": 64, "depth": 4},
        "optim": {"lr": 1e-3},
        "name": "data",  # later bases win over earlier ones
        "data": {"size": 32},
        "train": {"steps": 5},
    }


def test_single_base_string_and_engine_defaults_underneath(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "method: toy\noptim: {lr: 0.5}\n")
    config = load_config(_write(tmp_path / "c.yaml", "_base_: base.yaml\ntrain: {steps: 3}\n"))
    assert config["optim"]["lr"] == 0.5
    assert config["optim"]["weight_decay"] == ENGINE_DEFAULTS["optim"]["weight_decay"]
    assert config["train"]["steps"] == 3 and config["train"]["batch_size"] == ENGINE_DEFAULTS["train"]["batch_size"]
    assert "_base_" not in config


def test_base_cycle_and_missing_files_name_the_file(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(a)
    missing = _write(tmp_path / "m.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(UserError, match=r"nowhere\.yaml: config file not found"):
        load_config(missing)
    broken = _write(tmp_path / "broken.yaml", "optim: {lr: [1, 2\n")
    with pytest.raises(UserError, match=r"broken\.yaml: invalid YAML"):
        load_config(broken)
    scalar = _write(tmp_path / "scalar.yaml", "3\n")
    with pytest.raises(UserError, match=r"scalar\.yaml: a config must be a mapping"):
        load_config(scalar)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-3", 1e-3), ("2E4", 2e4), ("-1.5e-2", -0.015), ("7", 7), ("true", True), ("[1, 2]", [1, 2]), ("null", None)],
)
def test_values_parse_as_yaml_with_plain_exponents(text: str, expected: object) -> None:
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_overrides_set_typed_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "method: toy\nmodel: {width: 8, name: a}\ntrain: {steps: 4}\n")
    config = load_config(
        path, ["optim.lr=1e-3", "model.width=16", "train.tensorboard=false", "optim.betas=[0.8, 0.9]", "model.name=b"]
    )
    assert config["optim"]["lr"] == 1e-3 and isinstance(config["optim"]["lr"], float)
    assert config["model"] == {"width": 16, "name": "b"}
    assert config["train"]["tensorboard"] is False
    assert config["optim"]["betas"] == [0.8, 0.9]
    # A file value written 1e-4 is a number too (plain YAML 1.1 would read a string).
    assert load_config(_write(tmp_path / "e.yaml", "optim: {lr: 1e-4}\n"))["optim"]["lr"] == 1e-4


def test_unknown_override_key_is_an_error_with_close_matches() -> None:
    config = {"optim": {"lr": 0.1, "min_lr": 0.0}, "model": {"width": 8}}
    with pytest.raises(UserError, match=r"unknown config key 'optim\.lrr' \(did you mean optim\.lr") as info:
        apply_overrides(config, ["optim.lrr=1"])
    assert "+optim.lrr" in str(info.value)
    with pytest.raises(UserError, match=r"unknown config key 'modle'"):
        apply_overrides(config, ["modle.width=3"])
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides(config, ["optim.lr"])
    with pytest.raises(UserError, match=r"'model\.width' is 8, not a section"):
        apply_overrides(config, ["model.width.x=1"])


def test_plus_adds_keys_and_sections_without_touching_the_input() -> None:
    config = {"model": {"width": 8}}
    result = apply_overrides(config, ["+model.depth=3", "+loss.multi_label.weight=0.5"])
    assert result == {"model": {"width": 8, "depth": 3}, "loss": {"multi_label": {"weight": 0.5}}}
    assert config == {"model": {"width": 8}}


def test_save_config_round_trips_atomically(tmp_path: Path) -> None:
    config = resolve_engine_config({"method": "toy", "train": {"steps": 2}, "model": {"dims": (1, 2), "lr": 1e-5}})
    path = save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(path, defaults=None) == {**config, "model": {"dims": [1, 2], "lr": 1e-5}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]  # no temporary file left


def test_engine_defaults_yaml_documents_the_real_defaults() -> None:
    documented = yaml.safe_load((REPO / "configs" / "engine_defaults.yaml").read_text())
    assert load_config(REPO / "configs" / "engine_defaults.yaml", defaults=None) == ENGINE_DEFAULTS
    assert documented.keys() == ENGINE_DEFAULTS.keys()


def test_engine_sections_are_validated() -> None:
    good = {"method": "toy", "train": {"steps": 3}}
    assert resolve_engine_config(good)["optim"] == ENGINE_DEFAULTS["optim"]
    cases = [
        ({"train": {}}, "train.steps is not set"),
        ({"train": {"steps": 3, "precision": "fp8"}}, r"train\.precision: must be auto \| fp32 \| bf16 \| fp16"),
        ({"train": {"steps": 3, "stpes": 4}}, r"unknown config key train\.stpes \(did you mean train\.steps"),
        ({"train": {"steps": 0}}, "train.steps: must be a positive integer"),
        ({"train": {"steps": 3}, "optim": {"lr": "1e-3"}}, "optim.lr: must be a positive number"),
        ({"train": {"steps": 3}, "optim": {"accum_steps": 0}}, "optim.accum_steps"),
        ({"train": {"steps": 3}, "optim": {"betas": [0.9]}}, "optim.betas"),
        ({"train": {"steps": 3}, "optim": {"name": "lamb"}}, "optim.name: must be adamw | sgd"),
        ({"train": {"steps": 3}, "optim": {"momentum": 1.0}}, r"optim.momentum: must be a number in \[0, 1\)"),
        ({"train": {"steps": 3, "tensorboard": "yes"}}, "train.tensorboard: must be true or false"),
    ]
    for config, message in cases:
        with pytest.raises(UserError, match=message):
            resolve_engine_config(config)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_builds_its_method(path):
    from annofree.methods import get_method

    config = load_config(path)
    method = get_method(config["method"])(config)
    assert sum(p.numel() for p in method.parameters()) > 0


def test_a_path_is_relative_to_the_file_whose_value_wins(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {init_weights: a}\n")
    (tmp_path / "b.yaml").write_text("train: {init_weights: b, steps: 3}\n")
    (tmp_path / "c.yaml").write_text("_base_: [a.yaml, b.yaml]\ntrain: {steps: 4}\n")
    config = load_config(tmp_path / "c.yaml", defaults=None)
    # The winning file's value, taken relative to that file.
    assert config["train"] == {"init_weights": str(tmp_path.resolve() / "b"), "steps": 4}


def test_unknown_top_level_sections_are_refused_with_a_hint() -> None:
    from annofree.engine.config import check_method_config
    from annofree.methods import get_method

    groupvit = get_method("groupvit")
    with pytest.raises(UserError, match=r"^unknown config section trian \(did you mean train\?\)$"):
        check_method_config({"method": "groupvit", "trian": {}}, groupvit)
    with pytest.raises(UserError, match=r"^unknown config section zzz \(known: seed, method, optim, train, model, "):
        check_method_config({"zzz": 1}, groupvit)
    check_method_config({"method": "groupvit", "demo": {"anything": 1}}, groupvit)  # `annofree demo`'s own section


def test_resume_refuses_another_method_or_model_in_one_line() -> None:
    from annofree.engine.config import check_resume
    from annofree.methods import get_method

    model_of = get_method("groupvit").model_section
    saved = {"method": "groupvit", "model": {"image": {"embed_dim": 128, "num_heads": [4, 4, 4]}}}
    with pytest.raises(UserError, match=r"^cannot resume: .*\(method groupvit -> densesiam\)"):
        check_resume(saved, {**saved, "method": "densesiam"}, model_of)
    changed = {**saved, "model": {"image": {"embed_dim": 64, "num_heads": [4, 4, 4]}, "proj_hidden_dim": 512}}
    with pytest.raises(UserError) as info:
        check_resume(saved, changed, model_of)
    assert "model.image.embed_dim 128 -> 64, model.proj_hidden_dim 4096 -> 512" in str(info.value)
    assert "\n" not in str(info.value)
    # A default written out, or an optimiser change, is no model change.
    same = {**saved, "model": {"image": {"embed_dim": 128, "num_heads": [4, 4, 4], "patch_size": 16}}}
    check_resume(saved, {**same, "optim": {"lr": 1.0}}, model_of)


def test_a_training_state_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    import torch

    from annofree.engine.checkpoint import STATE_NAME, state_mismatch
    from annofree.engine.trainer import train

    from .toy_method import toy_config

    run = tmp_path / "run"
    train(toy_config(train={"steps": 2}), run, data="toy")
    state = torch.load(run / STATE_NAME, weights_only=True)
    expected = dict(state["method"])
    state["method"]["net.0.weight"] = torch.zeros(3, 3)  # as a run of another model would have saved
    state["method"]["old.bias"] = state["method"].pop("log_scale")
    torch.save(state, run / STATE_NAME)
    assert (
        state_mismatch(expected, state["method"])
        == "shapes net.0.weight (3, 3) -> (8, 4); new log_scale; gone old.bias"
    )
    with pytest.raises(UserError, match=r"^cannot resume: the saved training state does not fit this config \(shapes "):
        train(toy_config(train={"steps": 4}), run, data="toy", resume=True)


def test_a_key_written_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    twice = _write(tmp_path / "twice.yaml", "model:\n  width: 8\n  width: 16\noptim: {lr: 1}\n")
    with pytest.raises(UserError, match=r"twice\.yaml: invalid YAML \(line 3\): key 'width' written twice"):
        load_config(twice)
    nested_same_name = _write(tmp_path / "ok.yaml", "model: {lr: 1}\noptim: {lr: 2}\n")
    assert load_config(nested_same_name)["optim"]["lr"] == 2
