"""What ``annofree`` tells about itself: ``--version``, help pages in plain text, examples that run."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

import annofree
from annofree.cli import build_parser, main

MARKUP = re.compile(r"``|:(func|class|mod|meth|attr):`")


def all_parsers(parser: argparse.ArgumentParser, name: str = "annofree"):
    """``(command line, parser)`` of the command and of every subcommand below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from all_parsers(sub, f"{name} {sub_name}")


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"annofree {annofree.__version__}\n"


def test_help_pages_show_no_raw_markup():
    pages = dict(all_parsers(build_parser()))
    assert {"annofree synth", "annofree synth scenes", "annofree synth textures", "annofree convert"} <= set(pages)
    for name, parser in pages.items():
        text = parser.format_help()
        assert not MARKUP.search(text), f"{name} --help shows markup: {MARKUP.search(text).group(0)}"


def test_convert_help_examples_are_whole_commands_that_parse():
    convert = dict(all_parsers(build_parser()))["annofree convert"]
    examples = [line.strip() for line in convert.format_help().splitlines() if line.strip().startswith("annofree ")]
    assert len(examples) >= 3
    for example in examples:
        assert " --out " in example, example
        build_parser().parse_args(shlex.split(example)[1:])  # exits (fails the test) on a bad command line
