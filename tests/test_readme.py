"""The README cannot drift: every ``annofree`` command in it parses with the real command line, and every Python
block runs, as written, in a folder holding small stand-ins for what it names (runs/tiny, runs/ds, photo.jpg,
data/scenes/val)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


# ----------------------------------------------------------------------------- the Python blocks


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def readme_folder(tmp_path, monkeypatch) -> Path:
    """What the README's Python names, small enough to run in seconds: ``runs/tiny`` (a GroupViT with patch 16, so
    that the README's short side 448 stays cheap, and a 16-token context, shorter than CLIP's 77), ``runs/ds`` (a
    tiny DenseSiam), ``photo.jpg`` and ``data/scenes/val`` (a segmentation folder)."""
    from annofree.models import GroupViT, GroupViTConfig, ImageEncoderConfig, TextEncoderConfig
    from annofree.weights import save_weights
    from tests.tiny import save_tiny_densesiam, write_noise_folder

    config = GroupViTConfig(
        image=ImageEncoderConfig(
            img_size=64, patch_size=16, embed_dim=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
            num_group_tokens=(8, 4, 0), num_output_groups=(8, 4),
        ),
        text=TextEncoderConfig(context_length=16, width=32, layers=1, heads=2),
        embed_dim=16,
        proj_hidden_dim=32,
    )  # fmt: skip
    model = GroupViT(config)
    save_weights(tmp_path / "runs" / "tiny" / "model.safetensors", model, "groupvit", config.to_dict())
    save_tiny_densesiam(tmp_path / "runs" / "ds", clusters=4)
    write_noise_folder(tmp_path / "data" / "scenes" / "val", ["background", "circle", "star", "heart"])
    photo = np.random.default_rng(0).integers(0, 256, (48, 70, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_python_to_run():
    assert readme_python_blocks()


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_block_runs(index, readme_folder):
    block = readme_python_blocks()[index]
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(block, f"README.md, Python block {index + 1}", "exec"), namespace)
    # What the first block promises, checked where it names it (later lines may add, never break these).
    if "result" in namespace and hasattr(namespace["result"], "label_map"):
        assert namespace["result"].label_map.shape == (48, 70)
    for written in re.findall(r'\.save\("([^"]+)"\)|export_backbone\([^)]*"([^"]+)"\)', block):
        name = next(part for part in written if part)
        assert (readme_folder / name).is_file(), name
