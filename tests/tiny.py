"""The tiny models shared by the tests: GroupViT (32x32 images, 8 then 4 groups, 16-token text) and DenseSiam
(ResNet-18 with a 16-channel FPN and few clusters, no auxiliary or region heads); and a tiny noise folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.models import DenseSiam, DenseSiamConfig, GroupViT, GroupViTConfig, ImageEncoderConfig, TextEncoderConfig
from annofree.weights import save_weights


def tiny_groupvit_config(vocab_size: int = 49408) -> GroupViTConfig:
    """``vocab_size`` 49408 takes CLIP's BPE ids (the CLI tokenizes); a small one suits stand-in tokenizers."""
    return GroupViTConfig(
        image=ImageEncoderConfig(
            img_size=32,
            patch_size=4,
            embed_dim=32,
            depths=(1, 1, 1),
            num_heads=(2, 2, 2),
            num_group_tokens=(8, 4, 0),
            num_output_groups=(8, 4),
        ),
        text=TextEncoderConfig(context_length=16, vocab_size=vocab_size, width=32, layers=1, heads=2),
        embed_dim=16,
        proj_hidden_dim=32,
    )


def tiny_groupvit_section(image: dict | None = None, text: dict | None = None, **top) -> dict:
    """The tiny GroupViT as a config's ``model`` section, with keys of ``image``, ``text`` and the top level changed."""
    section = tiny_groupvit_config().to_dict()
    section["image"].update(image or {})
    section["text"].update(text or {})
    return {**section, **top}


def tiny_groupvit(seed: int = 0, vocab_size: int = 49408) -> GroupViT:
    torch.manual_seed(seed)
    return GroupViT(tiny_groupvit_config(vocab_size))


def save_tiny_groupvit(run_dir: Path, seed: int = 0) -> Path:
    """A run directory holding the tiny model's weights; returns the weights file."""
    model = tiny_groupvit(seed)
    return save_weights(Path(run_dir) / "model.safetensors", model, "groupvit", model.config.to_dict())


def tiny_densesiam(seed: int = 0, clusters: int = 4) -> DenseSiam:
    torch.manual_seed(seed)
    config = DenseSiamConfig(
        dense_dim=clusters, aux_dim=0, fpn_channels=16, dense_hidden=16, dense_pred_hidden=8, region_branch=False
    )
    return DenseSiam(config).eval()


def save_tiny_densesiam(run_dir: Path, seed: int = 0, clusters: int = 4) -> Path:
    """A run directory holding a tiny DenseSiam's weights; returns the weights file."""
    model = tiny_densesiam(seed, clusters)
    return save_weights(Path(run_dir) / "model.safetensors", model, "densesiam", model.config.to_dict())


def write_noise_folder(root: Path, classes: list[str]) -> Path:
    """A segmentation folder of three random images of different sizes, random labels (first row 255)."""
    write_classes(root, classes)
    rng = np.random.default_rng(0)
    for name, (height, width) in {"one": (24, 32), "two": (30, 20), "three": (17, 23)}.items():
        label = rng.integers(0, len(classes), (height, width)).astype(np.uint8)
        label[0] = 255
        write_segmentation_sample(root, name, rng.integers(0, 256, (height, width, 3), dtype=np.uint8), label)
    return root


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    """The two runs' saved weights are equal bit for bit, tensor by tensor (the failing tensor named)."""
    from annofree.weights import read_weights

    a, _, _ = read_weights(run_a)
    b, _, _ = read_weights(run_b)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
