"""Suspect labels: which validation samples' given labels the trained model most doubts (torch-free).

cleanlab's multi-label label-issue detection (`cleanlab.multilabel_classification`) needs
*out-of-sample* probabilities: a model scores the samples it was fit on as it was taught, so
a wrong label it memorised looks right. The training loop's validation split is the one set of
samples the kept model never trained on (the best epoch is chosen on it, which selects a
model, never fits a sample's label), so only validation samples are checked.

- `rank.get_label_quality_scores` (self-confidence, aggregated over labels with cleanlab's
  default exponential moving average) gives every sample a label-quality score in [0, 1];
  the ranking is by that score, lowest (most suspect) first.
- `filter.find_label_issues` (prune by noise rate, cleanlab's default) flags the samples it
  judges mislabelled; the ranking keeps every sample and says which are flagged.
- Unknown cells (partial labels) are filled with the model's own decision (score >= the
  label's threshold) before cleanlab sees them: cleanlab's multi-label input is a set of
  present labels per sample, with no "unknown", and a cell that agrees with the model
  neither raises nor hides suspicion of the sample's annotated cells. They never appear
  among the disagreements.
- A disagreement is an annotated cell the model decides the other way at its threshold:
  given but scored below it, or not given but scored at or above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Version of the stored ranking's layout.
FORMAT_VERSION = 1


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


def _flags(labels: list[list[int]], probs: np.ndarray) -> np.ndarray:
    """cleanlab's mislabelled flags; all False when it cannot estimate noise rates (tiny splits)."""
    from cleanlab.multilabel_classification import filter as cl_filter

    try:
        flagged = cl_filter.find_label_issues(labels, probs, n_jobs=1)
    except (ValueError, IndexError, ZeroDivisionError):
        return np.zeros(len(labels), dtype=bool)
    return np.asarray(flagged, dtype=bool)


def _disagreements(
    probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, names: Sequence[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        if math.isnan(float(targets[j])):
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
) -> list[LabelIssue]:
    """Every sample of a split ranked by cleanlab's label quality, most suspect first.

    `probs` are the out-of-sample probabilities (num_samples x num_labels), `targets` 0/1 with
    NaN for unknown cells, `thresholds` the model's per-label decision thresholds, `indices`
    the samples' positions in their dataset. Ties keep the split's order.
    """
    from cleanlab.multilabel_classification import rank

    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    targets = np.asarray(targets, dtype=np.float64)
    cutoffs = np.asarray(thresholds, dtype=np.float64)
    if probs.shape != targets.shape or probs.ndim != 2 or cutoffs.shape != (probs.shape[1],):
        raise ValueError("probabilities, targets and thresholds have mismatched shapes")
    if len(probs) == 0:
        return []
    filled = _filled_labels(probs, targets, cutoffs)
    scores = np.asarray(rank.get_label_quality_scores(filled, probs), dtype=np.float64)
    flagged = _flags(filled, probs)
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
                disagreements=_disagreements(probs[i], row, cutoffs, labels),
            )
        )
    return issues
