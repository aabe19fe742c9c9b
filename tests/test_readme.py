"""Every ``annofree`` command in the README parses with the real command line (the docs cannot drift)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from annofree.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """``annofree ...`` lines of the README's bash blocks, continuations joined, comments and ``[...]`` dropped."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line.startswith("annofree "):
                commands.append(re.sub(r"\[[^\]]*\]", "", line))
    return commands


def test_the_readme_has_commands_to_check():
    assert len(readme_commands()) >= 20


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    parser = build_parser()
    try:
        parser.parse_args(shlex.split(command)[1:])
    except SystemExit as exc:  # argparse exits on a bad command line
        pytest.fail(f"README command does not parse ({exc.code}): {command}")
