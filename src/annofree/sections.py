"""Typed config sections: each YAML section is a frozen dataclass built, and checked, by ``from_dict``.

Every section of a run config (the engine's ``optim`` and ``train``, a method's ``model``, ``data``,
``loss``, ...) is read the same way, before any work starts:

>>> from dataclasses import dataclass
>>> from typing import Literal
>>> @dataclass(frozen=True)
... class LossSection(Section, key="loss"):
...     weight: float = spec(1.0, ge=0)  # a number >= 0
...     form: Literal["softmax", "sigmoid"] = "softmax"
...
...     def __post_init__(self):  # rules between fields
...         require(self.weight > 0 or self.form == "softmax", "weight", "> 0 with the sigmoid form", self.weight)
>>> LossSection.from_dict({"form": "sigmoid"})  # None or {}: every default
LossSection(weight=1.0, form='sigmoid')
>>> LossSection(weight=2).to_dict()  # plain values again (lists, dicts), as YAML writes them
{'weight': 2, 'form': 'softmax'}

``from_dict`` (:func:`parse_section`) rejects unknown keys (with a "did you mean"), checks each value against its
field's type (``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal``, ``tuple[...]``, unions, nested
sections) and range (:func:`spec`), turns lists into tuples, and runs the dataclass's own checks. Each
failure is a one-line :class:`ConfigError` naming the dotted key:

>>> LossSection.from_dict({"weight": -1})
Traceback (most recent call last):
annofree.sections.ConfigError: config key loss.weight: must be a number >= 0, got -1
>>> LossSection.from_dict({"wieght": 2})
Traceback (most recent call last):
annofree.sections.UnknownKeyError: unknown config key loss.wieght (did you mean loss.weight?)

A default is written once, as the field's default; a commented defaults file (``configs/engine_defaults.yaml``)
is tested against ``Section().to_dict()``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

from annofree.errors import UserError

T = TypeVar("T")
_RANGE = "range"


class ConfigError(UserError, ValueError):
    """A bad config value; ``key`` is its dotted name (relative to the section until the section is parsed)."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(self.render())

    def render(self) -> str:
        return f"config key {self.key}: {self.problem}"

    def within(self, section: str) -> ConfigError:
        """The same error with ``section.`` in front of its key."""
        return type(self)(f"{section}.{self.key}" if section else self.key, self.problem)


class UnknownKeyError(ConfigError):
    """A config key that no section field has; ``problem`` is the hint (did you mean, or the known keys)."""

    def render(self) -> str:
        return f"unknown config {'key' if '.' in self.key else 'section'} {self.key}{self.problem}"


def require(ok: bool, key: str, need: str, value: Any) -> None:
    """Raise ``ConfigError(key, "must be NEED, got VALUE")`` unless ``ok`` (for a section's own rules)."""
    if not ok:
        raise ConfigError(key, f"must be {need}, got {_show(value)}")


def spec(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
         le: float | None = None, lt: float | None = None) -> Any:  # fmt: skip
    """A field with a range for its number (or for each number of its tuple): ``lr: float = spec(1e-3, gt=0)``."""
    return dataclasses.field(default=default, metadata={_RANGE: (ge, gt, le, lt)})


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` (did you mean a.b?)`` for the known keys close to ``key``, or an empty string."""
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def unknown_key_error(section: str, key: str, known: Iterable[str]) -> UnknownKeyError:
    """``unknown config key SECTION.KEY (did you mean SECTION.OTHER?)``, or with the known keys listed."""
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    if close:
        hint = f" (did you mean {', '.join(prefix + k for k in close)}?)"
    else:
        hint = f" (known: {', '.join(prefix + k for k in known)})"
    return UnknownKeyError(prefix + key, hint)


class Section:
    """Base of a config section's frozen dataclass: ``from_dict`` builds and checks it, ``to_dict`` gives it back.

    ``key`` is the section's dotted name in errors (``class OptimSection(Section, key="optim")``).
    """

    key: ClassVar[str] = ""

    def __init_subclass__(cls, key: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if key is not None:
            cls.key = key

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None = None, key: str | None = None) -> T:
        """The section from its YAML values (None: all defaults), every key, type, range and rule checked;
        ``key`` names it in errors when it is not the class's own ``key``."""
        return parse_section(cls, values, cls.key if key is None else key)

    def to_dict(self) -> dict[str, Any]:
        """The values as YAML writes them (tuples as lists, nested sections as dicts)."""
        return plain(dataclasses.asdict(self))


def plain(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, recursively: what ``yaml.safe_dump`` and JSON accept."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def parse_section(cls: type[T], values: Mapping[str, Any] | None, section: str) -> T:
    """``cls(**values)`` with every key, type, range and rule of ``cls`` checked (see the module docstring).

    ``values`` None means an empty section (all defaults); ``section`` is the dotted name used in errors.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(section, f"must be a section (key: value lines), got {_show(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            raise unknown_key_error(section, str(key), fields)
    hints = _hints(cls)
    kwargs = {}
    for key, value in values.items():
        dotted = f"{section}.{key}" if section else key
        kwargs[key] = _convert(value, hints[key], fields[key].metadata.get(_RANGE), dotted)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.within(section) from None
    except (UserError, ValueError) as exc:  # a rule written without a key: name the section
        raise ConfigError(section, str(exc)) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Mismatch(Exception):
    """The value does not have the type."""


def _convert(value: Any, hint: Any, bounds: tuple | None, key: str) -> Any:
    try:
        converted = _as(value, hint, key)
    except _Mismatch:
        raise ConfigError(key, f"must be {_need(hint, bounds)}, got {_show(value)}") from None
    _check_range(converted, value, hint, bounds, key)
    return converted


def _as(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to ``hint`` (lists -> tuples, ints -> floats, dicts -> sections), or _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _as(value, option, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_as(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_as(v, a, key) for v, a in zip(value, args, strict=True))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return parse_section(hint, value, key)
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{key}: the section type {hint!r} is not supported by parse_section")
    raise _Mismatch


def _need(hint: Any, bounds: tuple | None = None) -> str:
    """What a value of type ``hint`` (within ``bounds``) is, in words: ``tuple[int, ...]`` -> "a list of integers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_need(option, bounds) for option in args)
    if origin is Literal:
        return " | ".join(str(choice) for choice in args)
    if origin is tuple:
        count = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        if len(set(args) - {Ellipsis}) != 1:
            return f"a list of {count}values"
        noun = _NOUNS.get(args[0], "value")
        if bounds is not None and noun in ("integer", "number"):
            return _range_words(noun, bounds, many=True).replace("a list of ", f"a list of {count}", 1)
        return f"a list of {count}{noun}s"
    if dataclasses.is_dataclass(hint) or hint in (dict, Mapping) or origin in (dict, Mapping):
        return "a section (key: value lines)"
    if bounds is not None and hint in (int, float):
        return _range_words(_NOUNS[hint], bounds, many=False)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


_NOUNS = {int: "integer", float: "number", str: "string", bool: "true/false value"}


def _check_range(value: Any, given: Any, hint: Any, bounds: tuple | None, key: str) -> None:
    """``value`` (converted from ``given``, which errors show) is within ``bounds``, or ConfigError."""
    if bounds is None or value is None:
        return
    numbers = value if isinstance(value, tuple) else (value,)
    ge, gt, le, lt = bounds
    inside = all(
        (ge is None or v >= ge) and (gt is None or v > gt) and (le is None or v <= le) and (lt is None or v < lt)
        for v in numbers
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    )
    if not inside:
        raise ConfigError(key, f"must be {_need(hint, bounds)}, got {_show(given)}")


def _range_words(noun: str, bounds: tuple, many: bool) -> str:
    """("number", (0, None, None, 1), False) -> "a number in [0, 1)"; many: "a list of numbers in [0, 1)"."""
    ge, gt, le, lt = bounds
    low, high = (ge, "[") if ge is not None else (gt, "("), (le, "]") if le is not None else (lt, ")")
    if low[0] is not None and high[0] is not None:
        condition = f"in {low[1]}{_num(low[0])}, {_num(high[0])}{high[1]}"
    elif low[0] is not None:
        condition = f"{'>=' if ge is not None else '>'} {_num(low[0])}"
    else:
        condition = f"{'<=' if le is not None else '<'} {_num(high[0])}"
    if many:
        return f"a list of {noun}s {condition}"
    if condition == "> 0":
        return f"a positive {noun}"
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} {condition}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
