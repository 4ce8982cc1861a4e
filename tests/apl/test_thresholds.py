"""Decision policies (`apl.thresholds`) and masked metrics: targets met where reachable, said where not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from apl.decisions import FALLBACK_THRESHOLD
from apl.metrics import f1_at_thresholds, per_class_average_precision, score_validation, tune_thresholds
from apl.thresholds import choose_thresholds


def _scores(n: int = 400, labels: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy scores: positives higher on average, overlapping negatives (no label is separable)."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, labels)) < np.linspace(0.1, 0.5, labels)[None, :]).astype(np.float32)
    probs = 1 / (1 + np.exp(-(rng.normal(0, 1, targets.shape) + 1.5 * (2 * targets - 1))))
    return probs, targets


def _precision(probs: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    return float(precision_score(truth, probs >= threshold, zero_division=0))


def _recall(probs: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    return float(recall_score(truth, probs >= threshold, zero_division=0))


@pytest.mark.parametrize("target", [0.7, 0.9])
def test_precision_at_takes_the_lowest_threshold_reaching_the_target(target: float) -> None:
    probs, targets = _scores()
    choice = choose_thresholds(probs, targets, "precision_at", target)
    assert choice.sources == ["tuned"] * 5 and choice.target_reached == [True] * 5
    for j, threshold in enumerate(choice.values):
        scores, truth = probs[:, j], targets[:, j]
        assert _precision(scores, truth, threshold) >= target
        # Every lower cut (taking in at least one more sample) falls short of the target.
        lower = np.sort(scores[scores < threshold])[::-1]
        assert all(_precision(scores, truth, cut) < target for cut in lower[:10])


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_recall_at_takes_the_highest_threshold_keeping_the_target(target: float) -> None:
    probs, targets = _scores(seed=1)
    choice = choose_thresholds(probs, targets, "recall_at", target)
    assert choice.target_reached == [True] * 5
    for j, threshold in enumerate(choice.values):
        scores, truth = probs[:, j], targets[:, j]
        assert _recall(scores, truth, threshold) >= target
        higher = np.sort(scores[scores >= threshold])[1:]  # cuts that leave out one more sample
        assert all(_recall(scores, truth, cut) < target for cut in higher[:10] if cut > threshold)


def test_an_unreachable_precision_says_so_and_takes_the_best_precision() -> None:
    # The highest score is a negative: precision 1.0 is out of reach; the best is 2/3.
    probs = np.array([[0.9], [0.8], [0.7], [0.6], [0.2], [0.1]])
    targets = np.array([[0], [1], [1], [0], [1], [0]])
    choice = choose_thresholds(probs, targets, "precision_at", 1.0, min_positives=1)
    assert choice.target_reached == [False] and choice.sources == ["tuned"]
    assert _precision(probs[:, 0], targets[:, 0], choice.values[0]) == pytest.approx(2 / 3)
    assert 0.6 < choice.values[0] <= 0.7  # the lowest threshold of that best precision
    reachable = choose_thresholds(probs, targets, "precision_at", 0.6, min_positives=1)
    assert reachable.target_reached == [True]
    assert _precision(probs[:, 0], targets[:, 0], reachable.values[0]) >= 0.6


def test_fixed_uses_the_target_everywhere_and_max_f1_is_the_old_tuning() -> None:
    probs, targets = _scores(seed=2)
    fixed = choose_thresholds(probs, targets, "fixed", 0.35)
    assert (
        fixed.values.tolist() == [0.35] * 5 and fixed.sources == ["tuned"] * 5
    )  # the contract: set by the policy
    assert fixed.fallback == [] and fixed.target_reached == [None] * 5
    best = choose_thresholds(probs, targets)
    np.testing.assert_array_equal(best.values, tune_thresholds(probs, targets).values)
    assert "tuned" in best.sources
    for j, threshold in enumerate(best.values):
        if best.sources[j] == "fallback":  # the held-out check kept the fallback (its reason says so)
            assert threshold == FALLBACK_THRESHOLD and "held-out" in str(best.reasons[j])
            continue
        scores, truth = probs[:, j], targets[:, j] > 0.5
        predicted = scores[None, :] >= scores[:, None]  # row i: the cut at sample i's score
        tp = (predicted & truth).sum(axis=1)
        every_f1 = 2 * tp / (predicted.sum(axis=1) + truth.sum())  # brute force over all cuts
        assert f1_score(truth, scores >= threshold) == pytest.approx(every_f1.max())


@pytest.mark.parametrize("policy", ["max_f1", "precision_at", "recall_at"])
def test_labels_with_too_few_positives_fall_back_under_every_tuned_policy(policy: str) -> None:
    probs, targets = _scores(seed=3)
    targets[:, 0] = 0
    targets[[7, 40, 90], 0] = 1  # three positives, however well scored
    probs[[7, 40, 90], 0] = 0.99
    choice = choose_thresholds(probs, targets, policy, None if policy == "max_f1" else 0.8)  # type: ignore[arg-type]
    assert choice.sources[0] == "fallback" and choice.values[0] == FALLBACK_THRESHOLD
    assert choice.target_reached[0] is None and 0 in choice.fallback
    assert choice.reasons[0] == "3 validation positives: fewer than 5, too few to tune a threshold"


def test_policies_with_a_target_need_one() -> None:
    probs, targets = _scores()
    with pytest.raises(ValueError, match="needs a target"):
        choose_thresholds(probs, targets, "recall_at")


@pytest.mark.parametrize(("policy", "target"), [("max_f1", None), ("precision_at", 0.8), ("recall_at", 0.9)])
def test_masked_thresholds_equal_those_of_the_known_rows_alone(policy: str, target: float | None) -> None:
    probs, targets = _scores(seed=4)
    mask = np.random.default_rng(1).random(probs.shape) > 0.25
    masked = choose_thresholds(probs, targets, policy, target, mask=mask)  # type: ignore[arg-type]
    for j in range(probs.shape[1]):
        rows = mask[:, j]
        alone = choose_thresholds(probs[rows, j : j + 1], targets[rows, j : j + 1], policy, target)  # type: ignore[arg-type]
        assert masked.values[j] == alone.values[0]
        assert masked.target_reached[j] == alone.target_reached[0]


def test_masked_metrics_equal_those_of_the_known_cells_alone() -> None:
    probs, targets = _scores(seed=5)
    mask = np.random.default_rng(2).random(probs.shape) > 0.3
    ap = per_class_average_precision(probs, targets, mask)
    for j in range(probs.shape[1]):
        rows = mask[:, j]
        assert ap[j] == pytest.approx(average_precision_score(targets[rows, j], probs[rows, j]))
    thresholds = np.full(probs.shape[1], 0.5)
    micro, macro = f1_at_thresholds(probs, targets, thresholds, mask)
    assert micro == pytest.approx(f1_score(targets[mask], probs[mask] >= 0.5))
    per_label = [f1_score(targets[mask[:, j], j], probs[mask[:, j], j] >= 0.5) for j in range(5)]
    assert macro == pytest.approx(np.mean(per_label))
    # Unknown cells may hold anything: flipping them changes nothing.
    flipped = np.where(mask, targets, 1 - targets)
    scores = score_validation(probs, flipped, list("abcde"), mask=mask)
    assert scores == score_validation(probs, targets, list("abcde"), mask=mask)
    assert scores.map == pytest.approx(np.mean(list(ap.values())))
    # No mask and an all-true mask agree.
    assert score_validation(probs, targets, list("abcde")) == score_validation(
        probs, targets, list("abcde"), mask=np.ones_like(mask)
    )


def _binormal(rng: np.random.Generator, separation: float, positives: int, negatives: int) -> tuple:
    """Calibrated scores of a label at prevalence 0.1: logit z ~ N(0, 1) for negatives and
    N(separation, 1) for positives, turned into the exact posterior P(y = 1 | z)."""
    z = np.r_[rng.normal(separation, 1, positives), rng.normal(0, 1, negatives)]
    truth = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    log_odds = np.log(0.1 / 0.9) + separation * z - separation**2 / 2
    return 1 / (1 + np.exp(-log_odds)), truth


def _population_f1(scores: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    chosen = scores >= threshold
    return float(2 * (chosen & truth).sum() / (chosen.sum() + truth.sum()))


def _simulate(separation: float, positives: int, runs: int = 40) -> dict[str, np.ndarray]:
    """Per run: the F1 on a fresh population (5,000 positives) of raw max-F1 tuning and of the
    rule, the share of that population each labels, and whether the rule tuned."""
    rng = np.random.default_rng(int(separation * 10) + positives)
    scores, truth = _binormal(rng, separation, 5000, 45000)
    out: dict[str, list[float]] = {"raw": [], "rule": [], "raw_share": [], "rule_share": [], "tuned": []}
    for _ in range(runs):
        p, y = _binormal(rng, separation, positives, 9 * positives)
        raw = choose_thresholds(p[:, None], y[:, None], min_positives=1, check_held_out=False).values[0]
        choice = choose_thresholds(p[:, None], y[:, None])
        for name, threshold in (("raw", raw), ("rule", choice.values[0])):
            out[name].append(_population_f1(scores, truth, threshold))
            out[f"{name}_share"].append(float((scores >= threshold).mean()))
        out["tuned"].append(float(choice.sources[0] == "tuned"))
    return {key: np.asarray(values) for key, values in out.items()}


def test_simulation_the_rule_tunes_only_where_the_evidence_carries_it() -> None:
    """Why the rule (module docstring): labels of known separation at prevalence 0.1, validation
    splits of 3 to 20 positives, thresholds judged on a fresh population.

    Raw max-F1 tuning on a label whose scores carry no signal labels more than half of all
    samples in every run (the README demo's `short`); the rule keeps the fallback. Below 5
    positives it never tunes. Where tuning does help (separation 1, 20 positives) it tunes and
    matches raw tuning; on a near-perfect label it is never worse at the 10th percentile.
    """
    for positives in (5, 20):
        noise = _simulate(0.0, positives)
        assert (noise["raw_share"] > 0.5).mean() >= 0.9
        assert noise["tuned"].mean() <= 0.05 and (noise["rule_share"] > 0.5).mean() <= 0.05
    for separation in (1.0, 4.0):
        assert _simulate(separation, 3, runs=10)["tuned"].sum() == 0
    useful = _simulate(1.0, 20)
    assert useful["tuned"].mean() >= 0.9 and useful["rule"].mean() >= useful["raw"].mean() - 0.02
    sharp = _simulate(4.0, 10)
    assert np.quantile(sharp["rule"], 0.1) >= np.quantile(sharp["raw"], 0.1)


def test_a_label_without_signal_keeps_the_fallback_and_says_why() -> None:
    rng = np.random.default_rng(7)
    probs = rng.random((300, 1))
    targets = (rng.random((300, 1)) < 0.2).astype(np.float32)  # 60 positives, unrelated to the scores
    choice = choose_thresholds(probs, targets)
    assert choice.sources == ["fallback"] and choice.values[0] == FALLBACK_THRESHOLD
    assert "did not beat the fallback on held-out folds" in str(choice.reasons[0])
