"""The linear probe: a 1x1 classifier on frozen dense features, trained on one labelled folder, scored on another."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from annofree.data.folder import SegmentationFolder, write_segmentation_sample
from annofree.data.synth_textures import TextureSceneConfig, write_texture_scenes
from annofree.errors import UserError
from annofree.evaluation.linear_probe import LinearProbe, ProbeSettings, linear_probe_folders

SETTINGS = ProbeSettings(epochs=15)


def texture_features(pixels: torch.Tensor) -> torch.Tensor:
    """Fixed (seeded) 5x5 filters, rectified and pooled to stride 4: local texture energy, no training."""
    bank = torch.randn(24, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    responses = F.conv2d(pixels - pixels.mean(dim=(2, 3), keepdim=True), bank, padding=2).abs()
    return F.avg_pool2d(responses, 4)


def noise_features(pixels: torch.Tensor) -> torch.Tensor:
    """Features that say nothing about the image: what a probe learns from them is the class prior alone."""
    seed = int(pixels.sum().item() * 1000) % 2**31
    return torch.randn(pixels.shape[0], 24, pixels.shape[2] // 4, pixels.shape[3] // 4,
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two labelled folders of 40 px texture scenes from different seeds: train and val."""
    root = tmp_path_factory.mktemp("probe")
    cfg = TextureSceneConfig(size=40)
    write_texture_scenes(root / "a", 0, 24, cfg, seed=1, workers=1, progress=False)
    write_texture_scenes(root / "b", 0, 12, cfg, seed=2, workers=1, progress=False)
    return root / "a" / "val", root / "b" / "val"


def test_a_trained_probe_beats_chance_and_is_deterministic(scenes) -> None:
    train, val = scenes
    scores = linear_probe_folders(texture_features, train, val, SETTINGS)
    prior = linear_probe_folders(noise_features, train, val, SETTINGS)
    # Noise features leave the probe little more than the class prior (mostly background: chance).
    objects = ("circle", "square", "triangle", "cross")
    assert all(prior["per_class_iou"][c] < 0.05 for c in objects)
    assert scores["miou"] > prior["miou"] + 0.1
    assert sum(scores["per_class_iou"][c] > 0.1 for c in objects) >= 3
    assert scores["probe"]["train_images"] == 24 and scores["num_images"] == 12
    assert linear_probe_folders(texture_features, train, val, SETTINGS) == scores  # the same seed, the same figures


def test_ignored_pixels_teach_and_count_nothing(scenes, tmp_path) -> None:
    train, val = scenes
    folder = SegmentationFolder(train)
    hidden = tmp_path / "train"
    labelled = 0
    for i in range(len(folder)):
        name, image, label = folder[i]
        label = np.where(label == 1, 255, label).astype(np.uint8)  # every circle pixel ignored
        labelled += int((label != 255).sum())
        write_segmentation_sample(hidden, name, image, label, image_format="png")
    (hidden / "classes.txt").write_text((train / "classes.txt").read_text())
    probe = LinearProbe(texture_features, 5, SETTINGS).fit(SegmentationFolder(hidden)[i] for i in range(len(folder)))
    assert probe.train_pixels == labelled
    val_folder = SegmentationFolder(val)
    predicted = np.concatenate([probe.predict(val_folder[i][1]).ravel() for i in range(len(val_folder))])
    assert 1 not in predicted  # a class never labelled is never predicted
    assert {0, 2, 3, 4} & set(predicted.tolist())
    # Scoring leaves ignored pixels out: a val set with all but background ignored counts background pixels only.
    name, image, label = val_folder[0]
    only_bg = np.where(label == 0, 0, 255).astype(np.uint8)
    scores = probe.score([(name, image, only_bg)], [str(c) for c in val_folder.classes])
    assert scores["num_pixels"] == int((label == 0).sum())


def test_bad_inputs_are_clear(scenes, tmp_path) -> None:
    train, val = scenes
    other = tmp_path / "other"
    name, image, label = SegmentationFolder(train)[0]
    write_segmentation_sample(other, name, image, label, image_format="png")
    (other / "classes.txt").write_text("background\nblob\n")
    with pytest.raises(UserError, match="differs"):
        linear_probe_folders(texture_features, other, val, SETTINGS)
    with pytest.raises(UserError, match=r"outside 0\.\.1"):
        LinearProbe(texture_features, 2, SETTINGS).fit([(name, image, label)])
    with pytest.raises(UserError, match="all 255"):
        LinearProbe(texture_features, 5, SETTINGS).fit([(name, image, np.full_like(label, 255))])
