"""Suspect labels only where the model can judge (`apl.label_issues.judge_labels`), with known answers."""

from __future__ import annotations

import numpy as np

from apl.label_issues import JUDGE_LIFT, judge_labels, rank_label_issues


def _split(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs, given labels, planted flips): label "good" is well scored and has 8 planted flips,
    "noise" is scored at random (prevalence 0.3), "rare" has 3 positives."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 3))
    truth[:, 0] = rng.random(n) < 0.3
    truth[:, 1] = rng.random(n) < 0.3
    truth[rng.choice(n, 3, replace=False), 2] = 1
    probs = np.empty((n, 3))
    probs[:, 0] = np.clip(np.where(truth[:, 0] > 0, 0.85, 0.1) + rng.normal(0, 0.05, n), 0.01, 0.99)
    probs[:, 1] = rng.random(n)
    probs[:, 2] = np.clip(np.where(truth[:, 2] > 0, 0.9, 0.05) + rng.normal(0, 0.02, n), 0.01, 0.99)
    given = truth.copy()
    planted = rng.choice(n, 8, replace=False)
    given[planted, 0] = 1 - given[planted, 0]
    return probs, given, planted


def test_only_labels_with_evidence_are_judged_and_the_rest_say_why() -> None:
    probs, given, _ = _split()
    good, noise, rare = judge_labels(probs, given, ["good", "noise", "rare"])
    assert good.judged and good.reason is None and good.ap is not None and good.ap > good.bar
    assert good.bar == prevalence_bar(given[:, 0].mean())
    assert not noise.judged and noise.reason is not None and "below the bar" in noise.reason
    assert not rare.judged and rare.reason == "3 known validation positives: fewer than 5"


def prevalence_bar(prevalence: float) -> float:
    return float(prevalence + JUDGE_LIFT * (1 - prevalence))


def test_the_bar_keeps_a_weak_label_from_flooding_the_list() -> None:
    """With the no-signal label in, cleanlab flags many clean samples; judged alone, the planted
    flips of the good label are what is flagged."""
    probs, given, planted = _split()
    names = ["good", "noise", "rare"]
    everything = rank_label_issues(probs, given, np.full(3, 0.5), names, np.arange(len(probs)))
    judged = [j.judged for j in judge_labels(probs, given, names)]
    kept = rank_label_issues(probs, given, np.full(3, 0.5), names, np.arange(len(probs)), judged=judged)

    def flagged(issues: list) -> set[int]:
        return {issue.index for issue in issues if issue.flagged}

    before, after = flagged(everything), flagged(kept)
    precision_before = len(before & set(planted)) / max(len(before), 1)
    precision_after = len(after & set(planted)) / max(len(after), 1)
    assert len(before) > 4 * len(planted)  # the random label makes dozens of samples "suspect"
    assert precision_after >= 0.8 and precision_after > 3 * precision_before
    assert (
        len(after & set(planted)) >= 5
    )  # most planted flips are still flagged (cleanlab prunes by noise rate)
    assert {issue.index for issue in kept[: len(planted)]} == set(planted.tolist())
    assert all(d["label"] == "good" for issue in kept for d in issue.disagreements)


def test_a_model_too_weak_for_any_label_ranks_nothing() -> None:
    rng = np.random.default_rng(5)
    probs = rng.random((200, 2))
    given = (rng.random((200, 2)) < 0.4).astype(np.float64)
    judgements = judge_labels(probs, given, ["a", "b"])
    assert not any(j.judged for j in judgements)
    judged = [j.judged for j in judgements]
    assert rank_label_issues(probs, given, np.full(2, 0.5), ["a", "b"], np.arange(200), judged=judged) == []


def test_a_single_judged_label_is_ranked_with_cleanlab_binary_form() -> None:
    probs, given, planted = _split(seed=1)
    judged = [True, False, False]
    issues = rank_label_issues(
        probs, given, np.full(3, 0.5), ["g", "n", "r"], np.arange(len(probs)), judged=judged
    )
    assert len(issues) == len(probs)
    assert {issue.index for issue in issues[: len(planted)]} == set(planted.tolist())


def test_unknown_cells_are_neither_positives_nor_negatives_of_the_judgement() -> None:
    probs, given, _ = _split(seed=2)
    hidden = given.copy()
    hidden[::3, 1] = np.nan
    (_, noise, _) = judge_labels(probs, hidden, ["good", "noise", "rare"])
    known = ~np.isnan(hidden[:, 1])
    assert noise.positives == int(hidden[known, 1].sum())
    assert noise.prevalence == float(hidden[known, 1].mean())
