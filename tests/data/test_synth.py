"""Synthetic captioned scenes: determinism, label/caption consistency, and the written data set layout."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from annofree.data.folder import SegmentationFolder
from annofree.data.synth import SHAPE_CLASSES, SYNONYMS, SceneConfig, render_scene, scene_rng, write_scenes


def members(shard) -> dict[str, bytes]:
    with tarfile.open(shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_a_scene_is_a_pure_function_of_seed_split_and_index():
    cfg = SceneConfig(size=48)
    a = render_scene(scene_rng(3, "train", 7), cfg)
    b = render_scene(scene_rng(3, "train", 7), cfg)
    c = render_scene(scene_rng(3, "val", 7), cfg)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.caption == b.caption
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("index", range(20))
def test_labels_match_the_objects_and_the_caption_names_them(index):
    scene = render_scene(scene_rng(0, "train", index), SceneConfig(size=64))
    assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
    assert scene.label.shape == (64, 64) and scene.label.dtype == np.uint8
    present = set(np.unique(scene.label)) - {0}
    expected = {SHAPE_CLASSES.index(o["class"]) + 1 for o in scene.objects}
    assert present == expected  # every object stays visible despite occlusion, and nothing else is labelled
    caption = scene.caption.lower()
    for obj in scene.objects:  # caption_omit_prob = 0: every object is named, by its name or a synonym
        assert any(word in caption for word in SYNONYMS[obj["class"]]), (scene.caption, obj["class"])


def test_captions_vary():
    captions = {render_scene(scene_rng(0, "train", i), SceneConfig(size=32)).caption for i in range(50)}
    assert len(captions) == 50


def test_write_scenes_train_shards_hold_only_images_and_captions(tmp_path):
    summary = write_scenes(tmp_path, train=25, val=6, cfg=SceneConfig(size=32), seed=1, samples_per_shard=10,
                           workers=1, progress=False)  # fmt: skip
    shards = sorted((tmp_path / "train").glob("*.tar"))
    assert [p.name for p in shards] == ["000000.tar", "000001.tar", "000002.tar"]
    assert summary.train_pattern.endswith("{000000..000002}.tar") and summary.train_images == 25
    names = [name for shard in shards for name in members(shard)]
    assert len(names) == 50 and {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt"}
    folder = SegmentationFolder(summary.val_dir)
    assert folder.classes == ["background", *SHAPE_CLASSES] and len(folder) == 6
    _, image, label = folder[0]
    assert image.shape == (32, 32, 3) and label.max() <= len(SHAPE_CLASSES)


def test_write_scenes_is_deterministic_whatever_the_number_of_workers(tmp_path):
    cfg = SceneConfig(size=32)
    write_scenes(tmp_path / "a", train=12, val=3, cfg=cfg, seed=5, workers=1, progress=False)
    write_scenes(tmp_path / "b", train=12, val=3, cfg=cfg, seed=5, workers=2, progress=False)
    for split_file in ["train/000000.tar", "val/labels/000002.png", "val/images/000001.png"]:
        if split_file.endswith(".tar"):
            assert members(tmp_path / "a" / split_file) == members(tmp_path / "b" / split_file)
        else:
            assert (tmp_path / "a" / split_file).read_bytes() == (tmp_path / "b" / split_file).read_bytes()


def test_write_scenes_rejects_an_empty_request(tmp_path):
    with pytest.raises(ValueError, match="positive number"):
        write_scenes(tmp_path, train=0, val=0)


def typical_share(prob: float) -> float:
    from annofree.data.synth import TYPICAL_COLOURS

    objects = [o for i in range(150) for o in render_scene(scene_rng(2, "train", i), SceneConfig(
        size=32, typical_colour_prob=prob)).objects]  # fmt: skip
    return sum(o["colour"] == TYPICAL_COLOURS[o["class"]] for o in objects) / len(objects)


def test_classes_take_their_typical_colour_as_often_as_asked():
    # Always asked: only a background of the same colour forces another; never asked: 1 in 12 by chance.
    assert typical_share(1.0) > 0.85
    assert typical_share(0.0) < 0.2
    assert 0.55 < typical_share(0.7) < 0.8
