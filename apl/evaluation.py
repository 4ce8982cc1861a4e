"""The evaluation of a finished model on one split, and the post-training step that makes it.

`finalize` runs once after training, on the best epoch's validation logits: it fits
each label's calibrator on held-out folds (`apl.calibrators`), chooses the thresholds on
the calibrated scores with the job's decision policy (`apl.thresholds`, which keeps the
fallback where the evidence is too thin, and says why) and builds the Evaluation
document. The validation split's ECE "after" is measured on the calibrators'
out-of-fold scores, so no calibrator judged cells it was fitted on.

`build_evaluation` is split-agnostic: it takes (calibrated probabilities, targets,
thresholds, calibration report) of any split, so a held-out test split is evaluated
the same way with the validation split's temperatures and thresholds.

The document (the contract's Evaluation without `model_id`), per label: support
(known positives in the split), AP, the threshold, where it came from and why
(`threshold_reason`, null for a tuned one), precision, recall and F1 at it, the
temperature, the calibration method chosen for it and why, and a precision-recall curve of at most 101
points (scikit-learn's curve, evenly subsampled, both ends kept; every point is
exactly `score >= threshold` on the split). Overall: mAP, micro and macro F1 at the
thresholds, mAP over the most and the least frequent third of the labels (frequency
counted on the training split when given, else the support) and the calibration block.
All metrics come from scikit-learn. `mask` (known cells) leaves unknown cells out of
every number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import precision_recall_curve, precision_recall_fscore_support

from apl.calibration import CalibrationReport
from apl.calibrators import Calibration, calibrated_report, fit_calibration
from apl.decisions import DECISION_RULE
from apl.metrics import f1_at_thresholds, per_class_average_precision
from apl.spec import CalibrationMethod, DecisionSpec
from apl.thresholds import ThresholdChoice, check_scores, choose_thresholds

MAX_CURVE_POINTS = 101
Split = Literal["validation", "test"]


def pr_curve(
    scores: np.ndarray, truth: np.ndarray, max_points: int = MAX_CURVE_POINTS, keep_at: float | None = None
) -> dict[str, Any]:
    """The label's PR curve as lists (thresholds ascending), at most `max_points` points, ends kept.

    With `keep_at` (the label's threshold), the point that threshold decides like (the lowest
    stored threshold at or above it) is kept too, so reading the curve there gives exactly the
    label's precision and recall.
    """
    if not truth.any():
        return {"precision": [], "recall": [], "thresholds": []}
    precision, recall, cutoffs = precision_recall_curve(truth, scores)
    precision, recall = precision[:-1], recall[:-1]  # sklearn's closing point has no threshold
    count = len(cutoffs)
    wanted = max_points if keep_at is None else max_points - 1
    keep = np.round(np.linspace(0, count - 1, min(wanted, count))).astype(int)
    if keep_at is not None:
        at = int(np.searchsorted(cutoffs, keep_at, side="left"))
        keep = np.append(keep, min(at, count - 1))
    keep = np.unique(keep)
    return {
        "precision": [float(v) for v in precision[keep]],
        "recall": [float(v) for v in recall[keep]],
        "thresholds": [float(v) for v in cutoffs[keep]],
    }


def frequency_thirds(counts: Sequence[float]) -> tuple[list[int], list[int]]:
    """(most frequent, least frequent) third of the labels: round(n / 3) each, at least one.

    Ordered by count (ties: label order), so a label set of 4 gives one label per group.
    """
    order = sorted(range(len(counts)), key=lambda j: (-float(counts[j]), j))
    size = max(1, round(len(order) / 3))
    return sorted(order[:size]), sorted(order[-size:])


def _group_map(ap: dict[int, float], group: list[int]) -> float | None:
    values = [ap[j] for j in group if j in ap]
    return float(np.mean(values)) if values else None


def _label_entry(
    j: int, name: str, scores: np.ndarray, truth: np.ndarray, choice: ThresholdChoice, ap: float | None
) -> dict[str, Any]:
    threshold = float(choice.values[j])
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, scores >= threshold, average="binary", zero_division=0
    )
    return {
        "label": name,
        "support": int(truth.sum()),
        "ap": ap,
        "threshold": threshold,
        "threshold_source": choice.sources[j],
        "threshold_reason": choice.reasons[j] if choice.reasons else None,
        "target_reached": choice.target_reached[j],
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "pr_curve": pr_curve(scores, truth, keep_at=threshold),
    }


def _calibration_entry(calibration: CalibrationReport, j: int) -> dict[str, Any]:
    if not calibration.per_label:
        return {"calibration": calibration.method, "calibration_reason": None}
    entry = calibration.per_label[j]
    return {"calibration": entry["method"], "calibration_reason": entry["reason"]}


def _with_min_labels(probs: np.ndarray, thresholds: np.ndarray, min_labels: int) -> np.ndarray:
    """The decision rule's labels as a boolean matrix (no top_k): thresholds, then min_labels."""
    chosen = probs >= thresholds[None, :]
    wanted = min(min_labels, probs.shape[1])
    for i in np.flatnonzero(chosen.sum(axis=1) < wanted):
        order = [j for j in np.argsort(-probs[i], kind="stable") if not chosen[i, j]]
        chosen[i, order[: wanted - int(chosen[i].sum())]] = True
    return chosen


def build_evaluation(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    thresholds: ThresholdChoice,
    calibration: CalibrationReport,
    *,
    split: Split = "validation",
    mask: np.ndarray | None = None,
    label_counts: Sequence[float] | None = None,
    min_labels: int = 0,
) -> dict[str, Any]:
    """The Evaluation document of one split (see the module docstring); JSON-ready."""
    scores, binary, known = check_scores(probs, targets, mask)
    if len(labels) != scores.shape[1]:
        raise ValueError("one label name per column is needed")
    ap = per_class_average_precision(scores, binary, known)
    micro, macro = f1_at_thresholds(scores, binary, thresholds.values, known)
    support = (binary & known).sum(axis=0)
    frequent, rare = frequency_thirds(list(label_counts) if label_counts is not None else support.tolist())
    document: dict[str, Any] = {
        "split": split,
        "num_samples": int(scores.shape[0]),
        "map": float(np.mean(list(ap.values()))) if ap else 0.0,
        "micro_f1": micro,
        "macro_f1": macro,
        "map_frequent": _group_map(ap, frequent),
        "map_rare": _group_map(ap, rare),
        "label_groups": {
            "frequent": [labels[j] for j in frequent],
            "rare": [labels[j] for j in rare],
            "counted_on": "training split" if label_counts is not None else split,
        },
        "decision": {
            "policy": thresholds.policy,
            "target": thresholds.target,
            "min_labels": min_labels,
            "rule": DECISION_RULE,
        },
        "calibration": calibration.as_dict(list(labels)),
        "per_label": [
            _label_entry(j, name, scores[known[:, j], j], binary[known[:, j], j], thresholds, ap.get(j))
            | {"temperature": float(calibration.temperatures[j])}
            | _calibration_entry(calibration, j)
            for j, name in enumerate(labels)
        ],
    }
    if min_labels > 0:
        chosen = _with_min_labels(scores, thresholds.values, min_labels)
        micro_m, macro_m = f1_at_thresholds(
            chosen.astype(np.float64), binary, np.full(len(labels), 0.5), known
        )
        document["with_min_labels"] = {"micro_f1": micro_m, "macro_f1": macro_m}
    return document


@dataclass(frozen=True)
class Finalized:
    """What training ends with: calibrators, thresholds and the evaluation they were judged by."""

    calibrator: Calibration
    thresholds: ThresholdChoice
    calibration: CalibrationReport
    evaluation: dict[str, Any]

    @property
    def temperatures(self) -> np.ndarray:
        """Per label: the temperature of a temperature-scaled label, 1 for every other."""
        return self.calibrator.temperatures


#: Where the validation split's ECE after calibration is measured.
HELD_OUT_FOLDS = (
    "out-of-fold scores of the validation split (each cell scored by a calibrator fitted without it)"
)


def finalize(
    logits: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    decision: DecisionSpec,
    calibration: CalibrationMethod,
    *,
    mask: np.ndarray | None = None,
    label_counts: Sequence[float] | None = None,
) -> Finalized:
    """Calibrate on the validation split, choose thresholds on the calibrated scores, evaluate."""
    logits = np.asarray(logits, dtype=np.float64)
    fit = fit_calibration(logits, targets, calibration, mask=mask)
    probs = fit.calibration.apply(logits)
    choice = choose_thresholds(probs, targets, decision.policy, decision.target, mask=mask)
    report = calibrated_report(
        logits, targets, fit.calibration, mask=mask, held_out=fit.held_out, measured_on=HELD_OUT_FOLDS
    )
    evaluation = build_evaluation(
        probs,
        targets,
        labels,
        choice,
        report,
        split="validation",
        mask=mask,
        label_counts=label_counts,
        min_labels=decision.min_labels,
    )
    return Finalized(calibrator=fit.calibration, thresholds=choice, calibration=report, evaluation=evaluation)
