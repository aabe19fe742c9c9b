import numpy as np
import pytest

from annofree.evaluation.groups import majority_labels, segment_majorities, segment_names


def test_each_segment_takes_its_most_frequent_true_label():
    segments = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    label = np.array([[3, 3, 0, 1], [3, 0, 1, 1], [0, 0, 0, 2]])
    assert segment_majorities(segments, label) == {0: 3, 1: 1, 2: 0}
    expected = np.array([[3, 3, 1, 1], [3, 3, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(majority_labels(segments, label), expected)


def test_ignored_pixels_do_not_vote_and_all_ignored_segments_stay_ignored():
    segments = np.array([[0, 0, 0], [1, 1, 5]])
    label = np.array([[255, 255, 2], [255, 255, 0]])
    assert segment_majorities(segments, label) == {0: 2, 5: 0}
    np.testing.assert_array_equal(majority_labels(segments, label), [[2, 2, 2], [255, 255, 0]])


def test_ties_go_to_the_smaller_label_and_shapes_must_match():
    assert segment_majorities(np.zeros((1, 4), int), np.array([[2, 1, 2, 1]])) == {0: 1}
    with pytest.raises(ValueError, match="differ in shape"):
        segment_majorities(np.zeros((2, 2), int), np.zeros((2, 3), int))
    assert segment_majorities(np.zeros((2, 2), int), np.full((2, 2), 255)) == {}


def test_segment_names_reads_scores_in_folder_ids():
    segments = np.array([[0, 1], [2, 2]])
    label = np.array([[1, 2], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.8, 0.3], [0.2, 0.4]])  # columns: classes 1 and 2
    names = segment_names(segments, label, scores)
    assert names == [(1, 1, 0.9), (2, 1, 0.8), (0, 2, 0.4)]
