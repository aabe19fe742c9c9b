"""DenseSiam cluster maps: at the input's resolution, equal to the model's own argmax, batches = one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annofree.errors import UserError
from annofree.inference.clusters import ClusterSegmenter, cluster_names, segment_clusters
from annofree.inference.result import pixel_fractions
from tests.tiny import tiny_densesiam


@pytest.fixture(scope="module")
def model():
    return tiny_densesiam(clusters=5)


def _rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_without_resize_equals_the_models_argmax(model) -> None:
    image = _rgb(36, 52)
    clusters = ClusterSegmenter(model, short_side=0).segment(image).label_map  # 0: keep the size
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    assert clusters.shape == (36, 52) and clusters.dtype == np.int64
    np.testing.assert_array_equal(clusters, model.segment_clusters(pixels)[0].numpy())


def test_short_side_resize_keeps_the_input_size(model) -> None:
    segmenter = ClusterSegmenter(model, short_side=24)
    clusters = segmenter.segment(_rgb(37, 53)).label_map
    assert clusters.shape == (37, 53)
    assert clusters.min() >= 0 and clusters.max() < 5
    assert segmenter.num_clusters == 5 and segmenter.labels == cluster_names(5)


def test_batches_equal_one_by_one_and_the_mode_is_restored(model) -> None:
    images = [_rgb(20, 28, seed) for seed in range(3)]
    segmenter = ClusterSegmenter(model, images_per_batch=2)
    batched = segmenter.segment_batch(images)
    for image, clusters in zip(images, batched, strict=True):
        np.testing.assert_array_equal(clusters.label_map, segmenter.segment(image).label_map)
    model.train()
    try:
        segment_clusters(model, images[0])
        assert model.training
    finally:
        model.eval()


def test_fractions_and_bad_short_side(model) -> None:
    shares = pixel_fractions(np.array([[0, 0], [2, 0]]), 3)
    assert shares.tolist() == [0.75, 0.0, 0.25]
    with pytest.raises(UserError, match="short_side must be a positive number of pixels, or 0 to keep"):
        ClusterSegmenter(model, short_side=-1)
    assert ClusterSegmenter(model, short_side=0).short_side is None  # 0 keeps the size, as in the CLI and app


def test_default_short_side_is_the_protocols_320(model) -> None:
    image = _rgb(40, 50)
    expected = ClusterSegmenter(model, short_side=320).segment(image).label_map
    np.testing.assert_array_equal(ClusterSegmenter(model).segment(image).label_map, expected)
    assert not np.array_equal(expected, ClusterSegmenter(model, short_side=0).segment(image).label_map)


def test_images_as_paths_pil_and_other_dtypes(model, tmp_path) -> None:
    from PIL import Image

    image = _rgb(30, 44)
    Image.fromarray(image).save(tmp_path / "a.png")
    segmenter = ClusterSegmenter(model, short_side=0)
    expected = segmenter.segment(image).label_map
    np.testing.assert_array_equal(segmenter.segment(tmp_path / "a.png").label_map, expected)
    np.testing.assert_array_equal(segmenter.segment(str(tmp_path / "a.png")).label_map, expected)
    np.testing.assert_array_equal(segmenter.segment(Image.fromarray(image)).label_map, expected)
    np.testing.assert_array_equal(segmenter.segment(image.astype(np.float32) / 255).label_map, expected)
    with pytest.raises(UserError, match="cannot segment a dict"):
        segmenter.segment({"image": image})
