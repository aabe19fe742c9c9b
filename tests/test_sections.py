"""Typed config sections: unknown keys, types, ranges and a section's own rules, each one error naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from annofree.errors import UserError
from annofree.sections import ConfigError, parse_section, require, spec


@dataclass(frozen=True)
class Inner:
    size: int | tuple[int, int] = spec(8, gt=0)


@dataclass(frozen=True)
class Section:
    lr: float = spec(1e-3, gt=0)
    momentum: float = spec(0.9, ge=0, lt=1)
    steps: int | None = spec(None, ge=1)
    name: Literal["adamw", "sgd"] = "adamw"
    scale: tuple[float, float] = spec((0.5, 1.0), gt=0, le=1)
    dims: tuple[int, ...] = (1, 2)
    flag: bool = True
    words: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, Any] | None = None

    def __post_init__(self):
        require(self.scale[0] <= self.scale[1], "scale", "[low, high] with low <= high", list(self.scale))


def test_values_are_converted_to_the_field_types() -> None:
    parsed = parse_section(
        Section,
        {"lr": 1, "steps": 3, "scale": [0.2, 0.4], "dims": [4], "words": ["a"], "inner": {"size": [2, 3]}},
        "optim",
    )
    assert parsed.lr == 1.0 and isinstance(parsed.lr, float) and parsed.steps == 3
    assert parsed.scale == (0.2, 0.4) and parsed.dims == (4,) and parsed.words == ("a",)
    assert parsed.inner == Inner(size=(2, 3))
    assert parse_section(Section, None, "optim") == Section()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lrr": 1}, r"^unknown config key optim\.lrr \(did you mean optim\.lr\?\)$"),
        ({"zzz": 1}, r"^unknown config key optim\.zzz \(known: optim\.lr, optim\.momentum, "),
        ({"inner": {"sise": 1}}, r"^unknown config key optim\.inner\.sise \(did you mean optim\.inner\.size\?\)$"),
        ({"lr": "abc"}, r"^config key optim\.lr: must be a positive number, got 'abc'$"),
        ({"lr": 0}, r"^config key optim\.lr: must be a positive number, got 0$"),
        ({"lr": True}, r"^config key optim\.lr: must be a positive number, got True$"),
        ({"momentum": 1}, r"^config key optim\.momentum: must be a number in \[0, 1\), got 1$"),
        ({"steps": 0}, r"^config key optim\.steps: must be an integer >= 1 or null, got 0$"),
        ({"steps": 2.5}, r"^config key optim\.steps: must be an integer >= 1 or null, got 2\.5$"),
        ({"name": "lamb"}, r"^config key optim\.name: must be adamw \| sgd, got 'lamb'$"),
        ({"scale": [2, 1]}, r"^config key optim\.scale: must be a list of 2 numbers in \(0, 1\], got \[2, 1\]$"),
        ({"scale": [0.9, 0.1]}, r"^config key optim\.scale: must be \[low, high\] with low <= high, got \[0\.9, 0\.1"),
        ({"scale": 0.5}, r"^config key optim\.scale: must be a list of 2 numbers in \(0, 1\], got 0\.5$"),
        ({"dims": [1, "x"]}, r"^config key optim\.dims: must be a list of integers, got \[1, 'x'\]$"),
        ({"flag": "yes please"}, r"^config key optim\.flag: must be true or false, got 'yes please'$"),
        ({"words": "photo"}, r"^config key optim\.words: must be a list of strings, got 'photo'$"),
        ({"inner": {"size": 0}}, r"^config key optim\.inner\.size: must be a positive integer or a list of 2"),
        ({"inner": 3}, r"^config key optim\.inner: must be a section \(key: value lines\), got 3$"),
        ({"extra": [1]}, r"^config key optim\.extra: must be a section \(key: value lines\) or null, got \[1\]$"),
    ],
)
def test_each_bad_value_is_one_error_naming_its_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_section(Section, values, "optim")
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_a_section_that_is_not_a_mapping_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^config key loss: must be a section \(key: value lines\), got \[1, 2\]$"):
        parse_section(Section, [1, 2], "loss")


def test_a_rule_raised_without_a_key_names_the_section() -> None:
    @dataclass
    class Keyless:
        size: int = 1

        def __post_init__(self):
            if self.size > 2:
                raise ValueError("size too large for this view")

    with pytest.raises(ConfigError, match=r"^config key data\.view1: size too large for this view$"):
        parse_section(Keyless, {"size": 3}, "data.view1")
