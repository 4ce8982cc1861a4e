"""Suspect labels: which validation samples' given labels the trained model most doubts (torch-free).

cleanlab's multi-label label-issue detection (`cleanlab.multilabel_classification`) needs
*out-of-sample* probabilities: a model scores the samples it was fit on as it was taught, so
a wrong label it memorised looks right. The training loop's validation split is the one set of
samples the kept model never trained on (the best epoch is chosen on it, which selects a
model, never fits a sample's label), so only validation samples are checked.

- `rank.get_label_quality_scores` (self-confidence, aggregated over labels with cleanlab's
  default exponential moving average) gives every sample a label-quality score in [0, 1];
  the ranking is by that score, lowest (most suspect) first.
- cleanlab reads a probability of 0.5 as "undecided", but the model decides each label at its
  own threshold (tuned on validation: 0.51 to 0.93 on the partial mosaics). So every label's
  probabilities are first moved in log-odds until its threshold sits at 0.5: a score just
  under the threshold then reads as a weak "no", not as a fairly confident "yes". On the
  partial demos this put 5 of the 7 planted flips in validation in the top 5% of the
  mosaics' list (2 before; all 7 in the first 12) and 3 of 11 on the film titles (2 before)
  (benchmarks/partial_label_issues.py); cleanlab's own per-class adjustment
  (`adjust_pred_probs`) did as well on the mosaics and worse on the titles (0 of 11).
- `filter.find_label_issues` (prune by noise rate, cleanlab's default) flags the samples it
  judges mislabelled; the ranking keeps every sample and says which are flagged.
- Unknown cells (partial labels) are filled with the model's own decision (score >= the
  label's threshold) before cleanlab sees them: cleanlab's multi-label input is a set of
  present labels per sample, with no "unknown", and a cell that agrees with the model
  neither raises nor hides suspicion of the sample's annotated cells. They never appear
  among the disagreements.
- A disagreement is an annotated cell the model decides the other way at its threshold:
  given but scored below it, or not given but scored at or above it.
- Only labels the model can judge take part (`judge_labels`): a label whose validation AP
  does not clear `bar = prevalence + JUDGE_LIFT * (1 - prevalence)` (the model must close at
  least three quarters of the gap between a random ranking, whose AP is about the prevalence,
  and a perfect one: at half the gap, 10-epoch mosaic models still flagged 10-24% of clean
  validation samples, at three quarters 4-10%, and the planted flip was flagged alike at both
  bars in each partial run; docs/results.md), or that has fewer than `MIN_POSITIVES_TO_JUDGE`
  known positives, is left out of cleanlab's input and of the disagreements, and the report
  says which and why.
  Without it a weak label dominates: the README demo's `short` (AP near its prevalence)
  made 79% of the validation samples "suspect". A model that can judge no label gets no
  ranking at all and says so. `tests/apl/test_label_issues.py` plants flips in labels of
  known quality and shows what the bar buys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apl.calibration import sigmoid

#: Version of the stored ranking's layout (2: judged and excluded labels).
FORMAT_VERSION = 2
#: Share of the gap between a random ranking (AP ~ prevalence) and a perfect one a label's AP must close.
JUDGE_LIFT = 0.75
#: Fewer known validation positives than this and a label's AP says too little to judge by.
MIN_POSITIVES_TO_JUDGE = 5
#: What a report says when no label can be judged.
TOO_WEAK = "the model is too weak to judge any label's annotations: no sample is ranked"


@dataclass(frozen=True)
class LabelJudgement:
    """Whether the model can judge one label's annotations, and the evidence."""

    label: str
    judged: bool
    ap: float | None
    prevalence: float
    bar: float
    positives: int
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ap": self.ap,
            "prevalence": self.prevalence,
            "bar": self.bar,
            "positives": self.positives,
            "reason": self.reason,
        }


def judge_labels(
    probs: np.ndarray, targets: np.ndarray, labels: Sequence[str], *, lift: float = JUDGE_LIFT
) -> list[LabelJudgement]:
    """Per label (known cells only): its AP against the bar of the module docstring."""
    from sklearn.metrics import average_precision_score

    out = []
    for j, name in enumerate(labels):
        known = ~np.isnan(targets[:, j])
        truth = targets[known, j] > 0.5
        positives = int(truth.sum())
        prevalence = float(truth.mean()) if truth.size else 0.0
        bar = prevalence + lift * (1 - prevalence)
        ap = float(average_precision_score(truth, probs[known, j])) if 0 < positives < truth.size else None
        reason = None
        if positives < MIN_POSITIVES_TO_JUDGE:
            reason = f"{positives} known validation positives: fewer than {MIN_POSITIVES_TO_JUDGE}"
        elif ap is None:
            reason = "no known validation negatives"
        elif ap < bar:
            reason = f"validation AP {ap:.3f} is below the bar {bar:.3f} (prevalence {prevalence:.3f})"
        out.append(LabelJudgement(name, reason is None, ap, prevalence, bar, positives, reason))
    return out


@dataclass(frozen=True)
class LabelIssue:
    """One validation sample, where it ranks and why."""

    #: Position of the sample in the dataset (the line of samples.jsonl, 0-based).
    index: int
    #: cleanlab's label-quality score in [0, 1]: low means the given labels are likely wrong.
    score: float
    #: Whether `filter.find_label_issues` flags the sample as mislabelled.
    flagged: bool
    given: list[str]
    unknown: list[str]
    #: [{"label", "given": bool, "score": model probability}] for each annotated cell the model
    #: decides the other way, most confident first.
    disagreements: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "score": self.score,
            "flagged": self.flagged,
            "given": self.given,
            "unknown": self.unknown,
            "disagreements": self.disagreements,
        }


def _filled_labels(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> list[list[int]]:
    """cleanlab's input: per sample the present label indices, unknown cells as the model decides."""
    known = ~np.isnan(targets)
    present = np.where(known, targets > 0.5, probs >= thresholds[None, :])
    return [[int(j) for j in np.flatnonzero(row)] for row in present]


def _centred(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Each label's probabilities shifted in log-odds so that its decision threshold becomes 0.5."""
    from scipy.special import logit

    eps = 1e-6
    shift = logit(np.clip(thresholds, eps, 1 - eps))
    return sigmoid(logit(np.clip(probs, eps, 1 - eps)) - shift[None, :])


def _flags(labels: list[list[int]], probs: np.ndarray) -> np.ndarray:
    """cleanlab's mislabelled flags; all False when it cannot estimate noise rates (tiny splits)."""
    from cleanlab.multilabel_classification import filter as cl_filter

    try:
        if probs.shape[1] == 1:
            from cleanlab import filter as binary_filter

            given, pair = _binary(labels, probs)
            flagged = binary_filter.find_label_issues(given, pair, n_jobs=1)
        else:
            flagged = cl_filter.find_label_issues(labels, probs, n_jobs=1)
    except (ValueError, IndexError, ZeroDivisionError):
        return np.zeros(len(labels), dtype=bool)
    return np.asarray(flagged, dtype=bool)


def _binary(labels: list[list[int]], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One label as cleanlab's binary classification: classes 0/1, probabilities [1 - p, p]."""
    given = np.array([1 if row else 0 for row in labels])
    return given, np.stack([1 - probs[:, 0], probs[:, 0]], axis=1)


def _quality(labels: list[list[int]], probs: np.ndarray) -> np.ndarray:
    """cleanlab's label-quality score per sample (its binary form for a single label)."""
    if probs.shape[1] == 1:
        from cleanlab import rank as binary_rank

        given, pair = _binary(labels, probs)
        return np.asarray(binary_rank.get_label_quality_scores(given, pair), dtype=np.float64)
    from cleanlab.multilabel_classification import rank

    return np.asarray(rank.get_label_quality_scores(labels, probs), dtype=np.float64)


def _disagreements(
    probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, names: Sequence[str | None]
) -> list[dict[str, Any]]:
    """Annotated cells of judged labels (a name; None for a label left out) decided the other way."""
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        if name is None or math.isnan(float(targets[j])):
            continue
        given, decided = bool(targets[j] > 0.5), bool(probs[j] >= thresholds[j])
        if given != decided:
            rows.append({"label": name, "given": given, "score": round(float(probs[j]), 6)})
    rows.sort(key=lambda row: abs(float(row["score"]) - 0.5), reverse=True)
    return rows


def rank_label_issues(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    labels: Sequence[str],
    indices: np.ndarray,
    *,
    judged: Sequence[bool] | None = None,
) -> list[LabelIssue]:
    """Every sample of a split ranked by cleanlab's label quality, most suspect first.

    `probs` are the out-of-sample probabilities (num_samples x num_labels), `targets` 0/1 with
    NaN for unknown cells, `thresholds` the model's per-label decision thresholds, `indices`
    the samples' positions in their dataset. Ties keep the split's order. Only the `judged`
    labels (default: every label) are ranked on; none judged gives an empty ranking.
    """
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    targets = np.asarray(targets, dtype=np.float64)
    cutoffs = np.asarray(thresholds, dtype=np.float64)
    if probs.shape != targets.shape or probs.ndim != 2 or cutoffs.shape != (probs.shape[1],):
        raise ValueError("probabilities, targets and thresholds have mismatched shapes")
    columns = np.flatnonzero(np.ones(len(labels), bool) if judged is None else np.asarray(judged, bool))
    if len(probs) == 0 or columns.size == 0:
        return []
    filled = _filled_labels(probs[:, columns], targets[:, columns], cutoffs[columns])
    centred = _centred(probs[:, columns], cutoffs[columns])
    scores = _quality(filled, centred)
    flagged = _flags(filled, centred)
    names = [labels[j] if j in set(columns.tolist()) else None for j in range(len(labels))]
    order = np.argsort(scores, kind="mergesort")
    issues = []
    for i in order:
        row = targets[i]
        issues.append(
            LabelIssue(
                index=int(indices[i]),
                score=round(float(scores[i]), 6),
                flagged=bool(flagged[i]),
                given=[labels[j] for j in range(len(labels)) if row[j] > 0.5],
                unknown=[labels[j] for j in range(len(labels)) if math.isnan(row[j])],
                disagreements=_disagreements(probs[i], row, cutoffs, names),
            )
        )
    return issues
