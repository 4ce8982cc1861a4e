"""The decision rule (`apl.decisions`): thresholds, then top_k, then min_labels."""

from __future__ import annotations

import numpy as np
import pytest

from apl.decisions import FALLBACK_THRESHOLD, choose_batch, choose_labels

SCORES = [0.9, 0.2, 0.6, 0.6, 0.05]


def test_labels_reaching_their_threshold_come_best_first_and_ties_keep_label_order() -> None:
    assert choose_labels(SCORES, [0.5] * 5) == [0, 2, 3]
    assert choose_labels(SCORES, [0.95, 0.1, 0.6, 0.7, 0.0]) == [2, 1, 4]  # >= reaches


def test_top_k_keeps_the_best_of_the_passing_labels_only() -> None:
    assert choose_labels(SCORES, [0.5] * 5, top_k=2) == [0, 2]
    # The best-scoring label does not pass its own threshold: top_k never brings it back.
    assert choose_labels(SCORES, [1.0, 0.0, 0.0, 0.0, 0.0], top_k=2) == [2, 3]
    assert choose_labels(SCORES, [0.5] * 5, top_k=0) == []


def test_min_labels_adds_the_highest_scoring_others_after_top_k() -> None:
    assert choose_labels(SCORES, [1.0] * 5) == []
    assert choose_labels(SCORES, [1.0] * 5, min_labels=1) == [0]
    assert choose_labels(SCORES, [1.0, 1.0, 0.0, 1.0, 1.0], min_labels=2) == [0, 2]
    assert choose_labels(SCORES, [0.5] * 5, top_k=1, min_labels=2) == [0, 2]
    assert choose_labels(SCORES, [0.5] * 5, min_labels=2) == [0, 2, 3]  # already enough
    assert choose_labels(SCORES, [1.0] * 5, min_labels=9) == [0, 2, 3, 1, 4]  # at most every label


def test_batches_accept_numpy_and_lists_alike() -> None:
    matrix = np.array([SCORES, SCORES[::-1]], dtype=np.float32)
    thresholds = np.full(5, FALLBACK_THRESHOLD)
    assert choose_batch(matrix, thresholds) == choose_batch(matrix.tolist(), thresholds.tolist())
    assert choose_batch(matrix, thresholds, top_k=1) == [[0], [4]]


def test_a_threshold_per_label_is_required() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        choose_labels(SCORES, [0.5])
