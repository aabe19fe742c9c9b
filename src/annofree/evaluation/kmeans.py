"""k-means baselines for unsupervised segmentation: what clustering without learning already achieves.

Two baselines, both clustered over the whole evaluation set (one set of centroids, like a model's clusters)
and then scored with the same Hungarian matching as a model (:func:`evaluate_cluster_samples`):

* raw pixel colours (RGB of every pixel);
* the dense features of a network (for example the same DenseSiam at random initialisation), upsampled to
  the image size.

k-means itself is plain Lloyd iterations from a k-means++ start, in torch, on a random subsample of the
vectors (fitting) and then on all of them (assigning).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from annofree.evaluation.clusters import evaluate_cluster_samples
from annofree.evaluation.folder import Sample


def kmeans(vectors: torch.Tensor, k: int, *, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """Centroids ``[k, D]`` of ``vectors`` ``[N, D]`` (k-means++ start, Lloyd iterations)."""
    if vectors.ndim != 2 or vectors.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} vectors of shape [N, D], got {tuple(vectors.shape)}")
    generator = torch.Generator().manual_seed(seed)
    vectors = vectors.float()
    centroids = vectors[torch.randint(len(vectors), (1,), generator=generator)]
    for _ in range(1, k):  # k-means++: far points are likelier next centroids
        distance = torch.cdist(vectors, centroids).min(1).values.square()
        weights = distance if distance.sum() > 0 else torch.ones_like(distance)
        centroids = torch.cat([centroids, vectors[torch.multinomial(weights, 1, generator=generator)]])
    for _ in range(iterations):
        assignment = torch.cdist(vectors, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # an empty cluster stays put
        if torch.allclose(updated, centroids):
            break
        centroids = updated
    return centroids


def assign(vectors: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """The nearest centroid of each vector, ``[N]`` (in chunks: many vectors, bounded memory)."""
    return torch.cat([torch.cdist(part.float(), centroids).argmin(1) for part in vectors.split(chunk)])


Featurize = Callable[[list[np.ndarray]], torch.Tensor]  # same-size uint8 images -> [B, D, H, W] at image size


def pixel_colours(images: list[np.ndarray]) -> torch.Tensor:
    """Raw RGB of every pixel in 0..1, ``[B, 3, H, W]``."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def network_features(dense_features: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 16) -> Featurize:
    """A featurizer from a network's dense output (``dense_features(pixels in [0, 1]) -> [B, D, h, w]``, as
    :meth:`DenseSiam.dense_features`), upsampled bilinearly to the image size, L2-normalised per pixel."""

    @torch.no_grad()
    def featurize(images: list[np.ndarray]) -> torch.Tensor:
        pixels = pixel_colours(images)
        dense = torch.cat([dense_features(part).float() for part in pixels.split(batch_size)])
        dense = F.interpolate(dense, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(dense, dim=1)

    return featurize


def _flat(features: torch.Tensor) -> torch.Tensor:
    """``[B, D, H, W]`` -> ``[B * H * W, D]``."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


class KMeansSegmenter:
    """One set of ``k`` centroids fitted on a random sample of the pixels of ``images`` (about the same number
    from each image); then it segments any image: every pixel goes to its nearest centroid."""

    def __init__(
        self, featurize: Featurize, images: Sequence[np.ndarray], k: int, *, fit_pixels: int = 100_000, seed: int = 0
    ):
        if not images:
            raise ValueError("k-means needs at least one image to fit on")
        self.featurize, self.k = featurize, k
        generator = torch.Generator().manual_seed(seed)
        # Features are computed again when segmenting: keeping every pixel's features of a whole set (128
        # channels at image size) would not fit in memory for real images; only the fitting sample is kept.
        per_image = max(1, fit_pixels // len(images))
        sample = []
        for image in images:
            vectors = _flat(featurize([image]))
            sample.append(vectors[torch.randperm(len(vectors), generator=generator)[:per_image]])
        self.centroids = kmeans(torch.cat(sample), k, seed=seed)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Cluster maps ``int64 [H, W]`` of same-size uint8 images (the ``predict`` of evaluate_cluster_samples)."""
        height, width = images[0].shape[:2]
        ids = assign(_flat(self.featurize(images)), self.centroids).reshape(len(images), height, width)
        return list(ids.numpy())


def kmeans_baseline(
    featurize: Featurize,
    samples: Sequence[Sample],
    class_names: Sequence[str],
    k: int,
    *,
    seed: int = 0,
    **scoring: Any,
) -> dict[str, Any]:
    """Fit k-means on the samples' pixels, then score it on the same samples as a model would be scored
    (``scoring``: keyword arguments of :func:`evaluate_cluster_samples`, e.g. ``groups``, ``progress``)."""
    segmenter = KMeansSegmenter(featurize, [image for _, image, _ in samples], k, seed=seed)
    return evaluate_cluster_samples(segmenter, samples, class_names, k, total=len(samples), **scoring)
