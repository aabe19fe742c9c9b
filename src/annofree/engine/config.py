"""Run configs: YAML files with inheritance, dotted command-line overrides and the engine's own sections.

A config is a plain nested dict. A file may start from other files::

    _base_: ../base.yaml            # or a list; paths are relative to this file
    optim: {lr: 1.0e-3}             # dicts merge key by key, everything else replaces

Overrides are ``key.sub=value`` words; the value is parsed as YAML (``1e-3``, ``true``, ``[1, 2]``,
``null``). Overriding a key that does not exist is an error (a typo should not train for a day with
the default); write ``+key.sub=value`` to add a new key.

The engine owns four keys and fills in their defaults (:data:`ENGINE_DEFAULTS`); ``optim`` and ``train``
are typed sections (:class:`OptimSection`, :class:`TrainSection`, read by :mod:`annofree.sections`). Methods
own every other section (``model``, ``data``, ``loss``, ...): they name them (``Method.sections``) and check
them (``Method.check_config``). :func:`check_method_config` refuses any other top-level key (``demo`` is
``annofree demo``'s), so a misspelt section is an error, not a section silently left at its defaults.

``seed``
    Base seed. The method is built right after seeding every RNG with ``seed`` (so the initial
    weights do not depend on the number of processes); the loop then runs with ``seed + rank``.
``method``
    The registered method name (``groupvit``, ...).
``optim``
    ``name`` adamw | sgd; ``lr`` peak learning rate; ``weight_decay`` (never on 1-D parameters,
    biases and the method's ``no_weight_decay()`` names, unless ``decay_all``: every parameter, as SimSiam and
    the DenseSiam release); ``betas``, ``eps`` (AdamW); ``momentum``
    (SGD, as SimSiam and DenseSiam train); ``warmup_steps`` of linear warm-up
    from ``warmup_lr``, then a cosine to ``min_lr`` at the last step (per optimiser step);
    ``clip_grad`` maximum gradient norm (null: no clipping, the norm is still logged);
    ``accum_steps`` micro-batches per optimiser step; ``accum_mode`` exact | plain | null (the method's own
    default, ``Method.accum_mode``): exact scores every sample of the step's micro-batches against every
    other (feature caching, docs/large-batch.md), plain backwards each micro-batch's own loss;
    ``lr_scale_batch`` (optional): ``lr``, ``warmup_lr`` and ``min_lr`` are given for this global batch and
    scaled linearly to the actual one (``batch_size * world_size * accum_steps``).
``train``
    ``steps`` optimiser steps in all; ``batch_size`` per process and micro-batch; ``num_workers``
    data-loading workers per process; ``precision`` auto | fp32 | bf16 | fp16 (autocast; fp16 adds a
    gradient scaler; auto: bf16 where the device runs it natively, fp32 elsewhere, see
    :mod:`annofree.precision`); ``compile`` runs the method's forward through ``torch.compile`` (eager, with
    a warning, where it cannot compile: :mod:`annofree.engine.compiled`); ``device`` auto | cpu | cuda;
    ``log_every`` / ``save_every`` steps (``save_every: 0`` saves only at the end); ``tensorboard`` event
    files in ``OUT/tb``; ``data`` default data pattern when ``--data`` is not given; ``find_unused_parameters`` for
    DistributedDataParallel (true when some parameters get no gradient in some steps).

``configs/engine_defaults.yaml`` is a commented copy of these defaults, tested equal to the dataclasses' own (each
default is written once, as a field's default).

Configs by name: ``load_config("groupvit/synth_tiny")`` (or ``groupvit/synth_tiny.yaml``, or
``configs/groupvit/synth_tiny.yaml`` outside the repository) reads the config packaged with annofree when
no such file exists here (:func:`find_config`; :func:`packaged_configs` lists them).

Paths inside configs (:data:`PATH_KEYS`: ``train.init_weights``, ``train.data``, DenseSiam's
``model.backbone_weights``) are relative to the file
that sets them, and those given as overrides to the working directory; :func:`load_config` returns them
absolute, so a saved config works from anywhere; in ``train.data`` each local part of each source is made
absolute, while URLs and ``pipe:`` commands (:mod:`annofree.data.sources`) stay as they are.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from annofree.data.sources import SOURCE_SEPARATOR, is_url, split_outside_braces
from annofree.errors import UserError
from annofree.io import atomic_write
from annofree.sections import ConfigError, Section, did_you_mean, plain, require, spec, unknown_key_error

BASE_KEY = "_base_"


@dataclass(frozen=True)
class OptimSection(Section, key="optim"):
    """The ``optim`` section (see the module docstring)."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = spec(1.0e-3, gt=0)
    weight_decay: float = spec(0.05, ge=0)
    decay_all: bool = False
    betas: tuple[float, float] = spec((0.9, 0.999), ge=0, lt=1)
    eps: float = spec(1.0e-8, gt=0)
    momentum: float = spec(0.9, ge=0, lt=1)
    warmup_steps: int = spec(0, ge=0)
    warmup_lr: float = spec(0.0, ge=0)
    min_lr: float = spec(0.0, ge=0)
    clip_grad: float | None = spec(None, gt=0)
    accum_steps: int = spec(1, ge=1)
    accum_mode: Literal["exact", "plain"] | None = None
    lr_scale_batch: int | None = spec(None, gt=0)


@dataclass(frozen=True)
class TrainSection(Section, key="train"):
    """The ``train`` section (see the module docstring); ``steps`` has no default."""

    steps: int | None = spec(None, gt=0)
    batch_size: int = spec(32, gt=0)
    num_workers: int = spec(2, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = spec(10, gt=0)
    save_every: int = spec(1000, ge=0)
    tensorboard: bool = True
    data: str | None = None
    init_weights: str | None = None
    find_unused_parameters: bool = False


ENGINE_SECTIONS: dict[str, type[Section]] = {section.key: section for section in (OptimSection, TrainSection)}
ENGINE_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "method": None,
    **{name: section().to_dict() for name, section in ENGINE_SECTIONS.items()},
}
# Top-level sections that `annofree train` does not read: `annofree demo`'s recipe settings.
OTHER_SECTIONS = ("demo",)

# Config values that are paths (or, for train.data, comma-separated path patterns): relative ones are taken
# relative to the file that sets them.
PATH_KEYS = ("train.init_weights", "train.data", "model.backbone_weights")
CONFIG_SUFFIX = ".yaml"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants a dot: ``1.0e-3``) and refuses a key written
    twice in one mapping (plain YAML keeps the last one silently, so one of the two settings would be lost)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' written twice in one section: keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A YAML scalar or flow collection as written on a command line: ``1e-3`` -> 0.001, ``[1,2]`` -> [1, 2]."""
    return yaml.load(text, Loader=_Loader)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: nested dicts merge key by key; any other value in ``update`` replaces the one in ``base``."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def packaged_configs_dir() -> Path:
    """The configs shipped inside the package (``configs/`` in the repository is a link to it)."""
    return Path(str(resources.files("annofree") / "configs"))


def packaged_configs() -> list[str]:
    """The names of the packaged run configs, ``METHOD/NAME`` (for ``--config METHOD/NAME``)."""
    root = packaged_configs_dir()
    return sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.glob(f"*/*{CONFIG_SUFFIX}"))


def find_config(path: str | Path) -> Path:
    """``path`` when it is a file; else the packaged config it names (``groupvit/synth_tiny``, with or without
    ``.yaml`` or a leading ``configs/``); else an error that lists the packaged configs."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"{path}: cannot read config (a folder, not a file)")
    if not path.is_absolute():
        name = path.as_posix().removeprefix("./").removeprefix("configs/")
        for candidate in (name, name + CONFIG_SUFFIX):
            packaged = packaged_configs_dir() / candidate
            if packaged.is_file():
                return packaged
    raise UserError(f"{path}: config file not found (packaged configs: {', '.join(packaged_configs())})")


def resolve_path_value(dotted: str, value: Any, base: Path) -> Any:
    """A path value of :data:`PATH_KEYS` made absolute against the folder ``base`` (other values as they are).

    A pretrained weights name (``groupvit-gcc-yfcc``) is not a path and stays as it is.
    """
    if not isinstance(value, str) or not value.strip():
        return value
    if dotted == "train.init_weights":
        from annofree.pretrained import REGISTRY

        if value in REGISTRY and not (base / value).exists():
            return value
        return os.path.normpath(base / os.path.expanduser(value))
    if dotted != "train.data":  # one file
        return os.path.normpath(base / os.path.expanduser(value))

    def absolute(part: str) -> str:  # URLs and pipe: commands stay as they are
        return part if not part or is_url(part) else os.path.normpath(base / os.path.expanduser(part))

    sources = split_outside_braces(value, SOURCE_SEPARATOR)
    return SOURCE_SEPARATOR.join(
        ",".join(absolute(part.strip()) for part in split_outside_braces(source, ",")) for source in sources
    )


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make the :data:`PATH_KEYS` that ``data`` (one file's own values) sets absolute against ``base``."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        values = data.get(section)
        if isinstance(values, dict) and key in values:
            values[key] = resolve_path_value(dotted, values[key], base)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a YAML config (binary, not text); give a .yaml file") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{path}: invalid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}")
    return data


def _load_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """One file with its bases merged underneath; ``chain`` holds the files being loaded (cycle check)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise UserError(f"{path}: _base_ cycle ({cycle})")
    data = _read_yaml(path)
    _resolve_paths(data, path.parent)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: _base_ must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, _load_file(path.parent / base, (*chain, path)))
    return merge(merged, data)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dicts are walked, their own dotted key is listed too)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        flat[dotted] = value
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
    return flat


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` / ``+key.sub=value`` words to a copy of ``config``."""
    result = copy.deepcopy(dict(config))
    for word in overrides:
        if "=" not in word:
            raise UserError(f"override {word!r}: expected key=value (e.g. optim.lr=1e-3)")
        dotted, text = word.split("=", 1)
        add = dotted.startswith("+")
        dotted = dotted[1:] if add else dotted
        parts = dotted.split(".")
        if not all(parts):
            raise UserError(f"override {word!r}: empty key")
        try:
            value = parse_value(text)
        except yaml.YAMLError:
            raise UserError(f"override {word!r}: value is not valid YAML (quote it)") from None
        node = result
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if part not in node:
                if not add:
                    hint = did_you_mean(where, flatten(result))
                    raise UserError(
                        f"override {word!r}: unknown config key {where!r}{hint}; write +{dotted}=... to add"
                    )
                node[part] = {}
            if not isinstance(node[part], dict):
                raise UserError(f"override {word!r}: {where!r} is {node[part]!r}, not a section")
            node = node[part]
        if parts[-1] not in node and not add:
            hint = did_you_mean(dotted, flatten(result))
            raise UserError(f"override {word!r}: unknown config key {dotted!r}{hint}; write +{dotted}=... to add it")
        if dotted in PATH_KEYS:  # a path typed on the command line is relative to the working directory
            value = resolve_path_value(dotted, value, Path.cwd())
        node[parts[-1]] = value
    return result


def load_config(
    path: str | Path, overrides: Iterable[str] = (), defaults: Mapping[str, Any] | None = ENGINE_DEFAULTS
) -> dict[str, Any]:
    """Read a YAML config with its ``_base_`` files, put it over ``defaults`` and apply the overrides.

    The engine defaults come first so that every engine key exists (``train.steps=10`` needs no ``+``)
    and the saved config records the values a run really used. ``path`` may name a packaged config
    (:func:`find_config`); relative paths inside come back absolute (:data:`PATH_KEYS`).
    """
    config = _load_file(find_config(path), ())
    if defaults is not None:
        config = merge(defaults, config)
    return apply_overrides(config, overrides)


def save_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``config`` as YAML, atomically (keys in their order, so the file reads like the input)."""
    path = Path(path)
    text = yaml.safe_dump(plain(config), sort_keys=False, default_flow_style=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


# --- validation ----------------------------------------------------------------------------------------


def resolve_engine_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with the engine sections checked (:class:`OptimSection`, :class:`TrainSection`)
    and their defaults filled in; a bad key or value is a one-line ``ConfigError`` naming it."""
    cfg = copy.deepcopy(dict(config))
    seed = cfg.setdefault("seed", ENGINE_DEFAULTS["seed"])
    require(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32 - 1024, "seed",
            "an integer in [0, 2**32)", seed)  # fmt: skip
    method = cfg.setdefault("method", None)
    require(method is None or isinstance(method, str), "method", "a method name", method)
    for name, section in ENGINE_SECTIONS.items():
        cfg[name] = section.from_dict(cfg.get(name)).to_dict()
    if cfg["train"]["steps"] is None:
        raise UserError("config key train.steps is not set (the number of optimiser steps to train)")
    return cfg


def check_method_config(config: Mapping[str, Any], method_cls: Any) -> Any:
    """Every top-level key of ``config`` is the engine's, the method's (``method_cls.sections``) or another
    command's (``demo``), and the method's sections pass ``method_cls.check_config`` (returned)."""
    known = [*ENGINE_DEFAULTS, *method_cls.sections, *OTHER_SECTIONS]
    for key in config:
        if key not in known:
            raise unknown_key_error("", str(key), known)
    accum_mode(config, method_cls)
    return method_cls.check_config(dict(config))


def accum_mode(config: Mapping[str, Any], method_cls: Any) -> str:
    """``optim.accum_mode`` with null read as the method's own default; exact needs the method's
    embed()/losses() split."""
    requested = (config.get("optim") or {}).get("accum_mode")
    if requested == "exact" and not method_cls.has_embed_split():
        raise ConfigError(
            "optim.accum_mode",
            f"exact needs embed() and losses(), which {method_cls.name} does not have; use plain (or null)",
        )
    return requested or method_cls.accum_mode


def check_resume(saved: Mapping[str, Any], now: Mapping[str, Any], model_of: Any) -> None:
    """Refuse to resume a run saved with ``saved`` (its config.yaml) under the config ``now`` when the
    trained modules would not fit: another method or another model. ``model_of(config)`` gives a config's
    model section in full (defaults filled in), so that writing a default out is no difference."""
    if saved.get("method") != now.get("method"):
        raise UserError(
            f"cannot resume: the run is a {saved.get('method')} run, the config is for {now.get('method')} "
            f"(method {saved.get('method')} -> {now.get('method')}); give another --out"
        )
    try:
        before = model_of(saved)
    except UserError:  # a saved config that no longer parses: the state's own check at loading decides
        return
    after = model_of(now)
    before, after = (
        {k: v for k, v in flatten(m, "model.").items() if not isinstance(v, Mapping)} for m in (before, after)
    )
    changed = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
    if changed:
        shown = ", ".join(f"{k} {_short(before.get(k))} -> {_short(after.get(k))}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise UserError(
            f"cannot resume: the model differs from the saved run's ({shown}{more}); "
            "drop those overrides or give another --out"
        )


def _short(value: Any) -> str:
    text = "(unset)" if value is None else yaml.safe_dump(plain(value), default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 40 else text[:37] + "..."
