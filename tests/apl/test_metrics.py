"""Validation metrics against scikit-learn and brute force, and threshold tuning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from apl.metrics import (
    DEFAULT_THRESHOLD,
    EpochMetrics,
    f1_at_thresholds,
    mean_average_precision,
    per_class_average_precision,
    score_validation,
    tune_thresholds,
)

PROBS = np.array(
    [
        [0.9, 0.1, 0.30, 0.2],
        [0.8, 0.4, 0.20, 0.1],
        [0.3, 0.7, 0.25, 0.3],
        [0.6, 0.2, 0.90, 0.4],
        [0.2, 0.6, 0.10, 0.5],
        [0.1, 0.3, 0.80, 0.6],
    ]
)
TARGETS = np.array(
    [
        [1, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [1, 0, 1, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],  # label 3 has no positive
    ]
)
LABELS = ["a", "b", "c", "d"]


def test_map_is_sklearn_macro_ap_over_labels_with_positives() -> None:
    expected = [average_precision_score(TARGETS[:, j], PROBS[:, j]) for j in range(3)]
    assert per_class_average_precision(PROBS, TARGETS) == pytest.approx(dict(enumerate(expected)))
    assert mean_average_precision(PROBS, TARGETS) == pytest.approx(np.mean(expected))
    # The same as sklearn's macro average restricted to the labels that have a positive.
    assert mean_average_precision(PROBS, TARGETS) == pytest.approx(
        average_precision_score(TARGETS[:, :3], PROBS[:, :3], average="macro")
    )


def test_map_on_a_fixed_example_by_hand() -> None:
    probs = np.array([[0.9], [0.8], [0.7], [0.1]])
    targets = np.array([[1], [0], [1], [0]])
    # Ranking: +, -, +, - -> AP = (1/1 + 2/3) / 2.
    assert mean_average_precision(probs, targets) == pytest.approx((1 + 2 / 3) / 2)
    assert mean_average_precision(probs, np.zeros_like(targets)) == 0.0


def _brute_force_best_f1(scores: np.ndarray, truth: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        best = max(best, f1_score(truth, scores >= t, zero_division=0))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_tuned_thresholds_reach_the_best_f1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = (rng.random((40, 3)) < 0.3).astype(int)
    truth[:2] = 1  # at least two positives per label
    probs = np.clip(truth * 0.3 + rng.random((40, 3)) * 0.7, 0, 1)
    tuned = tune_thresholds(probs, truth, min_positives=2, check_held_out=False)
    assert tuned.fallback == []
    for j in range(3):
        achieved = f1_score(truth[:, j], probs[:, j] >= tuned.values[j])
        assert achieved == pytest.approx(_brute_force_best_f1(probs[:, j], truth[:, j]))
        assert 0.0 <= tuned.values[j] <= 1.0


def test_threshold_sits_between_the_separating_scores() -> None:
    probs = np.array([[0.9], [0.7], [0.4], [0.2]])
    truth = np.array([[1], [1], [0], [0]])
    assert tune_thresholds(probs, truth, min_positives=2, check_held_out=False).values[0] == pytest.approx(
        0.55
    )


def test_labels_with_too_few_positives_fall_back() -> None:
    tuned = tune_thresholds(PROBS, TARGETS, min_positives=2, check_held_out=False)
    # b has 2 positives, c 2, a 3: tuned; d has none: fallback.
    assert tuned.fallback == [3]
    assert tuned.values[3] == DEFAULT_THRESHOLD
    one_positive = np.array([[1], [0], [0]])
    tuned = tune_thresholds(np.array([[0.2], [0.1], [0.9]]), one_positive)
    assert tuned.fallback == [0] and tuned.values[0] == DEFAULT_THRESHOLD


def test_f1_matches_sklearn_at_given_thresholds() -> None:
    thresholds = np.array([0.5, 0.5, 0.5, 0.5])
    micro, macro = f1_at_thresholds(PROBS, TARGETS, thresholds)
    predicted = PROBS >= 0.5
    assert micro == pytest.approx(f1_score(TARGETS, predicted, average="micro"))
    assert macro == pytest.approx(f1_score(TARGETS[:, :3], predicted[:, :3], average="macro"))


def test_score_validation_reports_everything_by_label_name() -> None:
    scores = score_validation(PROBS, TARGETS, LABELS)
    assert 0.0 <= scores.map <= 1.0
    assert set(scores.per_class_ap) == {"a", "b", "c"}
    assert set(scores.thresholds) == set(LABELS)
    assert scores.fallback_labels == LABELS  # 0 to 3 positives each: too few to tune
    thresholds = np.array([scores.thresholds[name] for name in LABELS])
    assert (scores.micro_f1, scores.macro_f1) == pytest.approx(f1_at_thresholds(PROBS, TARGETS, thresholds))
    with pytest.raises(ValueError, match="NaN"):
        score_validation(np.full_like(PROBS, np.nan), TARGETS, LABELS)


def test_perfect_and_inverted_rankings() -> None:
    truth = np.array(list(itertools.product([0, 1], repeat=2)) * 3)
    perfect = score_validation(truth * 0.8 + 0.1, truth, ["x", "y"])
    assert perfect.map == 1.0 and perfect.micro_f1 == 1.0 and perfect.macro_f1 == 1.0
    inverted = score_validation(0.9 - truth * 0.8, truth, ["x", "y"])
    assert inverted.map < 0.6


def test_epoch_metrics_metric_point_has_the_api_keys() -> None:
    metrics = EpochMetrics(1, 10, 0.5, 0.6, 0.7, 0.8, 0.9, {"a": 0.7}, 1.5, {"a": 0.4}, [])
    assert set(metrics.as_metric_point()) == {
        "epoch",
        "step",
        "train_loss",
        "val_loss",
        "map",
        "micro_f1",
        "macro_f1",
        "per_class_ap",
        "time_s",
    }
    assert EpochMetrics.from_dict(metrics.as_dict()) == metrics
