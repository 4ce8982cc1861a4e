"""The Evaluation document (`apl.evaluation`): curves, per-label numbers, thirds, calibration, masks."""

from __future__ import annotations

import bisect
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_score, recall_score

from apl.calibration import calibration_report, expected_calibration_error, sigmoid
from apl.calibrators import fit_calibration
from apl.decisions import choose_batch
from apl.evaluation import MAX_CURVE_POINTS, build_evaluation, finalize, frequency_thirds, pr_curve
from apl.spec import DecisionSpec
from apl.thresholds import choose_thresholds

LABELS = ["a", "b", "c", "d", "e", "f"]


def _logits(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rates = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    targets = (rng.random((n, len(rates))) < rates[None, :]).astype(np.float32)
    logits = 3.0 * (rng.normal(0, 1, targets.shape) + 1.2 * (2 * targets - 1))  # overconfident
    return logits, targets


def test_pr_curve_has_at_most_101_exact_points_and_keeps_both_ends() -> None:
    logits, targets = _logits()
    scores, truth = sigmoid(logits[:, 0]), targets[:, 0] > 0.5
    curve = pr_curve(scores, truth)
    full_t = precision_recall_curve(truth, scores)[2]
    assert len(full_t) > MAX_CURVE_POINTS
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"]) == MAX_CURVE_POINTS
    assert curve["thresholds"][0] == full_t[0] and curve["thresholds"][-1] == full_t[-1]
    assert curve["recall"][0] == 1.0 and curve["thresholds"] == sorted(curve["thresholds"])
    for p, r, t in list(zip(curve["precision"], curve["recall"], curve["thresholds"], strict=True))[::20]:
        assert p == pytest.approx(precision_score(truth, scores >= t))
        assert r == pytest.approx(recall_score(truth, scores >= t))
    short = pr_curve(scores[:30], truth[:30])
    assert len(short["thresholds"]) == len(precision_recall_curve(truth[:30], scores[:30])[2])
    assert pr_curve(scores, np.zeros_like(truth)) == {"precision": [], "recall": [], "thresholds": []}
    kept = pr_curve(scores, truth, keep_at=0.4321)
    assert len(kept["thresholds"]) <= MAX_CURVE_POINTS
    at = bisect.bisect_left(kept["thresholds"], 0.4321)  # how the dashboard reads the curve
    assert kept["precision"][at] == pytest.approx(precision_score(truth, scores >= 0.4321))
    assert kept["recall"][at] == pytest.approx(recall_score(truth, scores >= 0.4321))


def test_frequency_thirds_are_a_third_each_by_count_ties_in_label_order() -> None:
    assert frequency_thirds([5, 9, 1, 7, 3, 7]) == ([1, 3], [2, 4])
    assert frequency_thirds([2, 2, 2, 2]) == ([0], [3])
    assert frequency_thirds([4]) == ([0], [0])


def test_the_document_matches_sklearn_label_by_label_and_is_json() -> None:
    logits, targets = _logits()
    result = finalize(logits, targets, LABELS, DecisionSpec(policy="precision_at", target=0.9), "temperature")
    doc = result.evaluation
    probs = sigmoid(logits / result.temperatures[None, :])
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    assert doc["split"] == "validation" and doc["num_samples"] == 500
    assert doc["decision"] == {
        "policy": "precision_at",
        "target": 0.9,
        "min_labels": 0,
        "rule": doc["decision"]["rule"],
    }
    for j, entry in enumerate(doc["per_label"]):
        truth = targets[:, j] > 0.5
        assert entry["label"] == LABELS[j] and entry["support"] == int(truth.sum())
        assert entry["ap"] == pytest.approx(average_precision_score(truth, probs[:, j]))
        predicted = probs[:, j] >= entry["threshold"]
        assert entry["precision"] == pytest.approx(precision_score(truth, predicted))
        assert entry["recall"] == pytest.approx(recall_score(truth, predicted))
        assert entry["threshold_source"] == "tuned" and entry["target_reached"] is True
        assert entry["precision"] >= 0.9
        assert entry["temperature"] == pytest.approx(result.temperatures[j])
        # Read off the stored curve at the threshold, the curve gives the label's own numbers.
        at = bisect.bisect_left(entry["pr_curve"]["thresholds"], entry["threshold"])
        assert entry["pr_curve"]["precision"][at] == pytest.approx(entry["precision"])
        assert entry["pr_curve"]["recall"][at] == pytest.approx(entry["recall"])
    aps = [entry["ap"] for entry in doc["per_label"]]
    assert doc["map"] == pytest.approx(np.mean(aps))
    assert doc["map_frequent"] == pytest.approx(np.mean(aps[:2]))  # support falls with the label index
    assert doc["map_rare"] == pytest.approx(np.mean(aps[-2:]))
    assert doc["label_groups"] == {"frequent": ["a", "b"], "rare": ["e", "f"], "counted_on": "validation"}
    calibration = doc["calibration"]
    assert calibration["method"] == "temperature" and calibration["ece_bins"] == 15
    # (Temperature scaling minimises NLL, not ECE: with these imbalanced labels ECE need not fall.)
    assert calibration["ece_before"] == pytest.approx(expected_calibration_error(sigmoid(logits), targets))
    # "after" is measured on out-of-fold scores: each cell from a calibrator fitted without it.
    held_out = fit_calibration(logits, targets, "temperature").held_out
    assert calibration["ece_after"] == pytest.approx(expected_calibration_error(held_out, targets))
    assert "out-of-fold" in calibration["ece_measured_on"]
    assert {entry["calibration"] for entry in doc["per_label"]} <= {"temperature", "none"}
    assert len(calibration["reliability"]["before"]) == 15
    assert sum(b["count"] for b in calibration["reliability"]["after"]) == targets.size


def test_none_calibration_keeps_raw_scores_and_equal_ece() -> None:
    logits, targets = _logits(seed=1)
    result = finalize(logits, targets, LABELS, DecisionSpec(), "none")
    assert result.temperatures.tolist() == [1.0] * 6
    calibration = result.evaluation["calibration"]
    assert calibration["method"] == "none" and calibration["ece_before"] == calibration["ece_after"]
    np.testing.assert_array_equal(
        result.thresholds.values, choose_thresholds(sigmoid(logits), targets).values
    )


def test_min_labels_scores_follow_the_decision_rule() -> None:
    logits, targets = _logits(n=80, seed=2)
    result = finalize(
        logits, targets, LABELS, DecisionSpec(policy="fixed", target=0.99, min_labels=2), "none"
    )
    doc = result.evaluation
    probs = sigmoid(logits)
    chosen = np.zeros_like(targets, dtype=bool)
    for i, picked in enumerate(choose_batch(probs, result.thresholds.values, min_labels=2)):
        chosen[i, picked] = True
    assert chosen.sum(axis=1).min() >= 2
    tp = (chosen & (targets > 0.5)).sum()
    assert doc["with_min_labels"]["micro_f1"] == pytest.approx(
        2 * tp / (chosen.sum() + (targets > 0.5).sum())
    )


def test_build_evaluation_takes_any_split_and_a_mask() -> None:
    logits, targets = _logits(seed=3)
    probs = sigmoid(logits)
    mask = np.random.default_rng(4).random(probs.shape) > 0.2
    choice = choose_thresholds(probs, targets, mask=mask)
    report = calibration_report(logits, targets, np.ones(6), "none", mask=mask)
    doc = build_evaluation(
        probs, targets, LABELS, choice, report, split="test", mask=mask, label_counts=[1] * 6
    )
    assert doc["split"] == "test" and doc["label_groups"]["counted_on"] == "training split"
    for j, entry in enumerate(doc["per_label"]):
        rows = mask[:, j]
        alone = build_evaluation(
            probs[rows, j : j + 1],
            targets[rows, j : j + 1],
            [LABELS[j]],
            choose_thresholds(probs[rows, j : j + 1], targets[rows, j : j + 1]),
            calibration_report(logits[rows, j : j + 1], targets[rows, j : j + 1], np.ones(1), "none"),
        )["per_label"][0]
        assert entry == alone
    flipped = np.where(mask, targets, 1 - targets)
    assert (
        build_evaluation(
            probs, flipped, LABELS, choice, report, split="test", mask=mask, label_counts=[1] * 6
        )
        == doc
    )
