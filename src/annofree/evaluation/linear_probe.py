"""Linear-probe evaluation: a 1x1 classifier trained on frozen dense features of a labelled folder, scored by
mIoU on another.

What unsupervised segmentation papers (STEGO, HP, EAGLE) report beside their cluster figures: how much of the
classes a linear map of the features can read out, with labels. The network stays frozen; its features
(``dense_features(pixels in [0, 1]) -> [B, D, h, w]``; :func:`model_features` for a DenseSiam: its FPN output,
the features its heads see) are computed once per training image at the working resolution (shorter side
``short_side``), standardised per channel with the training set's mean and std, and a 1x1 convolution
(``D -> classes``, started at zero) is trained with Adam on them. Its logits are upsampled bilinearly to each
label's own size (the labels are never resized) and the cross-entropy is averaged over the labelled pixels, the
``ignore_index`` ones left out; scoring does the same upsampling and takes the argmax, so the probe is judged at
the labels' full resolution. Deterministic for a seed (the classifier starts at zero; the seed orders the
training images).

Example:
    >>> scores = linear_probe_folders(model_features(model), "data/train", "data/val")  # doctest: +SKIP
    >>> scores["miou"], scores["per_class_iou"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from annofree.errors import UserError
from annofree.evaluation.folder import Sample, _same_size_batches, summarize
from annofree.evaluation.metrics import ConfusionMatrix

FEATURE_BATCH = 16  # images per forward pass of the frozen network
DenseFeatures = Callable[[torch.Tensor], torch.Tensor]  # pixels [B, 3, H, W] in [0, 1] -> [B, D, h, w]


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is trained. The defaults were set on the tests' tiny scenes, never on a scored set."""

    epochs: int = 30  # passes over the training images
    lr: float = 0.01  # Adam
    batch_images: int = 8  # images per optimiser step
    seed: int = 0  # orders the training images
    ignore_index: int = 255


def model_features(model: nn.Module, short_side: int | None = 320) -> DenseFeatures:
    """A DenseSiam's frozen dense features (``model.dense_features``, eval mode, no gradient), computed with the
    shorter side resized to ``short_side`` (None or 0: the image's own size), as its clusters are scored."""
    from annofree.inference.zero_shot import eval_mode, resize_short_side

    param = next(model.parameters())

    @torch.no_grad()
    def features(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(device=param.device, dtype=torch.float32)
        if short_side:
            pixels = resize_short_side(pixels, int(short_side))
        with eval_mode(model):
            return model.dense_features(pixels.to(param.dtype)).float().cpu()

    return features


def _pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


class LinearProbe:
    """A 1x1 classifier on standardised frozen features; :meth:`fit` trains it, :meth:`predict` segments."""

    def __init__(self, features: DenseFeatures, num_classes: int, settings: ProbeSettings | None = None):
        if num_classes < 2:
            raise UserError(f"a linear probe needs at least 2 classes, got {num_classes}")
        self.features, self.num_classes = features, num_classes
        self.settings = settings or ProbeSettings()
        self.classifier: nn.Conv2d | None = None
        self.mean = self.std = None
        self.train_pixels = 0

    def fit(self, samples: Iterable[Sample]) -> LinearProbe:
        """Train on ``(name, image, label)`` samples; returns self."""
        ignore = self.settings.ignore_index
        cached, labels = [], []
        for batch, features in self._featurized(samples):
            for (name, _, label), one in zip(batch, features, strict=True):
                bad = (label != ignore) & (label >= self.num_classes)
                if bad.any():
                    raise UserError(f"{name}: label id {int(label[bad].max())} outside 0..{self.num_classes - 1}")
                cached.append(one)
                labels.append(torch.from_numpy(label.astype(np.int64)))
        if not cached:
            raise UserError("no training images for the linear probe")
        self.train_pixels = int(sum(int((label != ignore).sum()) for label in labels))
        if self.train_pixels == 0:
            raise UserError(f"the linear probe's training labels are all {ignore} (ignored)")
        flat = torch.cat([f.flatten(1) for f in cached], dim=1)  # [D, all positions]
        self.mean = flat.mean(dim=1)[None, :, None, None]
        self.std = flat.std(dim=1).clamp(min=1e-6)[None, :, None, None]
        cached = [(f[None] - self.mean) / self.std for f in cached]
        self.classifier = nn.Conv2d(flat.shape[0], self.num_classes, 1)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self._train(cached, labels)
        return self

    def _featurized(self, samples: Iterable[Sample]) -> Iterator[tuple[list[Sample], torch.Tensor]]:
        """Consecutive same-size samples in batches of ``FEATURE_BATCH``, with their features ``[b, D, h, w]``."""
        for batch in _same_size_batches(samples, FEATURE_BATCH):
            yield batch, self.features(torch.cat([_pixels(image) for _, image, _ in batch]))

    def _train(self, cached: list[torch.Tensor], labels: list[torch.Tensor]) -> None:
        settings = self.settings
        optimizer = torch.optim.Adam(self.classifier.parameters(), lr=settings.lr)
        generator = torch.Generator().manual_seed(settings.seed)
        for _ in range(settings.epochs):
            order = torch.randperm(len(cached), generator=generator).tolist()
            for start in range(0, len(order), settings.batch_images):
                chosen = order[start : start + settings.batch_images]
                total = torch.zeros(())
                count = 0
                for i in chosen:
                    logits = self._upsampled(cached[i], labels[i].shape)
                    total = total + F.cross_entropy(
                        logits, labels[i][None], ignore_index=settings.ignore_index, reduction="sum"
                    )
                    count += int((labels[i] != settings.ignore_index).sum())
                if count == 0:
                    continue
                optimizer.zero_grad()
                (total / count).backward()
                optimizer.step()

    def _upsampled(self, features: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Logits at a label's size: the 1x1 classifier at feature resolution, then bilinear upsampling."""
        return F.interpolate(self.classifier(features), size=tuple(size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """``uint8 [H, W, 3]`` -> ``int64 [H, W]`` class ids at the image's size."""
        return self._predict(self.features(_pixels(image))[0], image.shape[:2])

    @torch.no_grad()
    def _predict(self, features: torch.Tensor, size: Sequence[int]) -> np.ndarray:
        if self.classifier is None:
            raise RuntimeError("fit the probe first")
        logits = self._upsampled((features[None] - self.mean) / self.std, size)
        return logits[0].argmax(dim=0).numpy()

    def score(self, samples: Iterable[Sample], class_names: Sequence[str]) -> dict[str, Any]:
        """mIoU, accuracies and per-class IoU on ``(name, image, label)`` samples (as :func:`summarize`)."""
        matrix = ConfusionMatrix(self.num_classes, ignore_index=self.settings.ignore_index)
        count = 0
        for batch, features in self._featurized(samples):
            for (name, image, label), one in zip(batch, features, strict=True):
                try:
                    matrix.update(self._predict(one, image.shape[:2]), label)
                except ValueError as exc:
                    raise UserError(f"{name}: {exc}") from None
                count += 1
        if count == 0:
            raise UserError("no images to score the linear probe on")
        return summarize(matrix, class_names, count)


def linear_probe_folders(
    features: DenseFeatures,
    train_root: str | Path,
    val_root: str | Path,
    settings: ProbeSettings | None = None,
) -> dict[str, Any]:
    """Train a probe on the segmentation folder ``train_root`` and score it on ``val_root`` (both images/,
    labels/, classes.txt with the same classes). Returns the scores of :meth:`LinearProbe.score` plus
    ``"probe"``: the settings, the number of training images and labelled pixels."""
    from annofree.data.folder import SegmentationFolder

    train, val = SegmentationFolder(train_root), SegmentationFolder(val_root)
    classes = [str(c) for c in val.classes]
    if [str(c) for c in train.classes] != classes:
        raise UserError(
            f"{train_root}: its classes.txt ({len(train.classes)} classes) differs from {val_root}'s "
            f"({len(classes)}): a probe needs the same classes in the same order"
        )
    probe = LinearProbe(features, len(classes), settings).fit(train[i] for i in range(len(train)))
    scores = probe.score((val[i] for i in range(len(val))), classes)
    scores["probe"] = {
        **asdict(probe.settings),
        "train_images": len(train),
        "train_pixels": probe.train_pixels,
        "classifier": "1x1 conv on standardised frozen features, logits upsampled bilinearly to the labels",
    }
    return scores


__all__ = ["LinearProbe", "ProbeSettings", "linear_probe_folders", "model_features"]
