"""Grouping or naming? Diagnostics that split zero-shot segmentation into its two halves.

A GroupViT segments by grouping pixels, then naming each group by its closest class text. When its mIoU
stays low, these say which half fails (docs/learning.md, "the groups cannot be named"):

* **grouping**: give every segment the true label that covers most of it (labels are used for scoring
  only) and score the result. That is the mIoU that perfect naming would reach with these segments.
* **naming**: for every segment that covers mostly one object class, is that class the segment's most
  similar class text?
"""

from __future__ import annotations

import numpy as np


def segment_majorities(segments: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> dict[int, int]:
    """``{segment id: most frequent true label inside it}``; segments covering only ignored pixels are left out.

    ``segments`` and ``label`` are integer maps of one image, of the same shape. Ties go to the smaller label.
    """
    segments, label = np.asarray(segments), np.asarray(label)
    if segments.shape != label.shape:
        raise ValueError(f"segments {segments.shape} and label {label.shape} differ in shape")
    keep = label.reshape(-1) != ignore_index
    seg, gt = segments.reshape(-1)[keep].astype(np.int64), label.reshape(-1)[keep].astype(np.int64)
    if not seg.size:
        return {}
    ids, inverse = np.unique(seg, return_inverse=True)
    counts = np.zeros((len(ids), int(gt.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, gt), 1)
    return {int(i): int(c) for i, c in zip(ids, counts.argmax(axis=1), strict=True)}


def majority_labels(segments: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """The label map in which every segment carries its majority true label (the grouping's upper bound).

    Pixels of segments that cover only ignored pixels get ``ignore_index``.
    """
    majority = segment_majorities(segments, label, ignore_index)
    segments = np.asarray(segments)
    out = np.full(segments.shape, ignore_index, dtype=np.int64)
    for segment, value in majority.items():
        out[segments == segment] = value
    return out


def segment_names(segments: np.ndarray, label: np.ndarray, class_scores: np.ndarray, ignore_index: int = 255):
    """``(true label, named label, best score)`` for every segment, in the folder format's ids.

    Label 0 is the background and label ``c`` the ``c``-th class; ``class_scores[g, c - 1]`` is segment
    ``g``'s similarity to class ``c``'s text. A segment whose true label is 0 is a background segment: its
    best score says how strongly background looks like some class.
    """
    scores = np.asarray(class_scores)
    names = []
    for segment, truth in segment_majorities(segments, label, ignore_index).items():
        best = int(scores[segment].argmax())
        names.append((truth, best + 1, float(scores[segment, best])))
    return names


__all__ = ["majority_labels", "segment_majorities", "segment_names"]
