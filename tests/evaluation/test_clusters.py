"""Cluster evaluation on a folder: streamed confusion, matching, 255 ignored, things/stuff by true class."""

from __future__ import annotations

import numpy as np
import pytest

from annofree.data.folder import write_classes, write_segmentation_sample
from annofree.errors import UserError
from annofree.evaluation.clusters import evaluate_cluster_folder, evaluate_cluster_samples, read_groups
from tests.tiny import tiny_densesiam

CLASSES = ["sky", "grass", "cow"]


def _samples(labels):
    """(name, image, label) with random images; the predictors below look at the labels only."""
    rng = np.random.default_rng(0)
    return [(f"s{i}", rng.integers(0, 256, (*lab.shape, 3), dtype=np.uint8), lab) for i, lab in enumerate(labels)]


def _labels():
    rng = np.random.default_rng(1)
    out = [rng.integers(0, 3, (6, 8)).astype(np.uint8) for _ in range(3)]
    out[0][0] = 255  # an ignored row
    return out


def _predictor(labels, table):
    """Predicts cluster ``table[label]`` for every pixel (ignored pixels: any), in the order images arrive."""
    queue, lookup = iter(labels), np.asarray(table)
    return lambda images: [lookup[np.minimum(next(queue), len(lookup) - 1)] for _ in images]


def test_a_permutation_of_the_classes_scores_one() -> None:
    labels = _labels()
    result = evaluate_cluster_samples(_predictor(labels, [2, 0, 1]), _samples(labels), CLASSES, 3, progress=False)
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0
    assert result["mapping"] == [1, 2, 0]  # cluster -> class
    assert result["num_images"] == 3 and result["num_pixels"] == 3 * 48 - 8
    assert result["matching"] == "hungarian" and result["groups"] == {}
    assert set(result["per_class_iou"]) == set(CLASSES)


def test_more_clusters_than_classes_needs_many_to_one() -> None:
    labels = _labels()
    with pytest.raises(UserError, match="--many-to-one"):
        evaluate_cluster_samples(_predictor(labels, [0, 1, 2]), _samples(labels), CLASSES, 5, progress=False)
    labels = _labels()
    spread = _predictor(labels, [3, 1, 4])  # clusters 0 and 2 stay empty
    result = evaluate_cluster_samples(spread, _samples(labels), CLASSES, 5, many_to_one=True, progress=False)
    assert result["miou"] == 1.0 and result["matching"] == "many-to-one"
    assert [result["mapping"][k] for k in (3, 1, 4)] == [0, 1, 2]


def test_cluster_ids_out_of_range_name_the_image() -> None:
    labels = _labels()
    with pytest.raises(UserError, match=r"s0: cluster id 3 outside 0\.\.2"):
        evaluate_cluster_samples(_predictor(labels, [3, 0, 1]), _samples(labels), CLASSES, 3, progress=False)


def test_things_and_stuff_are_indexed_by_the_true_class() -> None:
    # Two images: sky (stuff) everywhere predicted right; cow (thing) half right, half called grass.
    sky = np.zeros((4, 4), np.uint8)
    cow = np.full((4, 4), 2, np.uint8)
    pred_cow = np.full((4, 4), 2)
    pred_cow[:2] = 1
    preds = iter([np.zeros((4, 4), np.int64), pred_cow])
    groups = {"things": [2], "stuff": [0, 1]}
    result = evaluate_cluster_samples(
        lambda images: [next(preds) for _ in images], _samples([sky, cow]), CLASSES, 3, groups=groups, progress=False
    )
    assert result["per_class_iou"] == {"sky": 1.0, "grass": 0.0, "cow": 0.5}
    assert result["groups"]["things"] == {"miou": 0.5, "mean_accuracy": 0.5, "pixel_accuracy": 0.5}
    assert result["groups"]["stuff"]["miou"] == 0.5  # sky 1.0, grass 0.0 (predicted, never true)
    assert result["groups"]["stuff"]["pixel_accuracy"] == 1.0


def test_things_file(tmp_path) -> None:
    assert read_groups(tmp_path, CLASSES) == {}
    (tmp_path / "things.txt").write_text("cow\n\n")
    assert read_groups(tmp_path, CLASSES) == {"things": [2], "stuff": [0, 1]}
    (tmp_path / "things.txt").write_text("cow\nhorse\n")
    with pytest.raises(UserError, match=r"things\.txt: 'horse' is not a class"):
        read_groups(tmp_path, CLASSES)
    (tmp_path / "things.txt").write_text("\n")
    with pytest.raises(UserError, match="no class names"):
        read_groups(tmp_path, CLASSES)


def test_a_densesiam_on_a_folder(tmp_path) -> None:
    root = tmp_path / "data"
    write_classes(root, CLASSES)
    (root / "things.txt").write_text("cow\n")
    for name, image, label in _samples(_labels()):
        write_segmentation_sample(root, name, image, label)
    model = tiny_densesiam(clusters=3)
    result = evaluate_cluster_folder(model, root, short_side=16, progress=False)
    assert result["num_images"] == 3 and result["num_pixels"] == 3 * 48 - 8 and result["num_clusters"] == 3
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["pixel_accuracy"] <= 1.0
    assert set(result["groups"]) == {"things", "stuff"} and sorted(result["mapping"]) == [0, 1, 2]
    assert evaluate_cluster_folder(model, root, limit=1, progress=False)["num_images"] == 1
    with pytest.raises(UserError, match="--many-to-one"):
        evaluate_cluster_folder(tiny_densesiam(clusters=4), root, progress=False)
