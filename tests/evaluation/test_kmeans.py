"""k-means baselines: the clustering itself, fitting over many images, and scoring like a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annofree.evaluation.kmeans import (
    KMeansSegmenter,
    assign,
    kmeans,
    kmeans_baseline,
    network_features,
    pixel_colours,
)


def blobs(seed=0, per=200):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + torch.randn(per, 2, generator=generator) for c in centres])
    return points, torch.arange(3).repeat_interleave(per)


def test_kmeans_finds_separated_blobs_whatever_the_seed():
    points, truth = blobs()
    for seed in range(3):
        ids = assign(points, kmeans(points, 3, seed=seed))
        # The same partition up to the cluster numbering: each true blob is one cluster, all different.
        per_blob = [torch.unique(ids[truth == b]) for b in range(3)]
        assert all(len(u) == 1 for u in per_blob) and len({int(u) for u in per_blob}) == 3


def test_kmeans_with_fewer_distinct_points_than_clusters_stays_finite():
    points = torch.tensor([[1.0, 1.0]] * 5 + [[3.0, 3.0]] * 5)
    centroids = kmeans(points, 4)
    assert torch.isfinite(centroids).all() and centroids.shape == (4, 2)
    with pytest.raises(ValueError, match="at least k=4"):
        kmeans(points[:3], 4)


def two_colour_samples(count=6, size=16):
    """Left half one class, right half another; each class has its own fixed colour."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        label = np.zeros((size, size), np.uint8)
        label[:, size // 2 :] = 1
        image = np.where(label[..., None] == 0, [200, 30, 30], [30, 30, 200]).astype(np.float64)
        image += rng.normal(0, 5, image.shape)
        samples.append((f"s{i}", np.clip(image, 0, 255).astype(np.uint8), label))
    return samples


def test_pixel_colour_kmeans_solves_data_where_colour_is_the_class():
    result = kmeans_baseline(pixel_colours, two_colour_samples(), ["red", "blue"], 2, progress=False)
    assert result["miou"] == pytest.approx(1.0) and result["matching"] == "hungarian"


def test_one_set_of_centroids_is_fitted_across_images():
    samples = two_colour_samples(count=4)
    segmenter = KMeansSegmenter(pixel_colours, [image for _, image, _ in samples], 2, fit_pixels=64)
    maps = segmenter([image for _, image, _ in samples])
    # Every image's left half gets the same cluster id: the centroids are shared, not refitted per image.
    assert len({int(m[0, 0]) for m in maps}) == 1 and all((m == m[0, 0]).sum() == 128 for m in maps)


def test_network_features_are_at_image_size_and_unit_length():
    conv = torch.nn.Conv2d(3, 8, 4, stride=4)
    featurize = network_features(conv, batch_size=2)
    features = featurize([image for _, image, _ in two_colour_samples(count=3)])
    assert features.shape == (3, 8, 16, 16)
    assert torch.allclose(features.norm(dim=1), torch.ones(3, 16, 16), atol=1e-5)
