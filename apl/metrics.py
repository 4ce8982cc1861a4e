"""Validation metrics for multi-label classification and per-class threshold tuning.

mAP is the macro average of scikit-learn's `average_precision_score` over the labels
that have at least one positive in the validation split (AP is undefined without
one). Decision thresholds are tuned per label on the validation split to maximise
that label's F1; a label with too few validation positives to tune on falls back to
the global threshold and is recorded as such. F1 scores are computed at the tuned
thresholds: micro over all labels, macro over the labels that have a positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve

from apl.decisions import FALLBACK_THRESHOLD

DEFAULT_THRESHOLD = FALLBACK_THRESHOLD
#: Fewer validation positives than this and a label's threshold is not tuned.
MIN_POSITIVES_TO_TUNE = 2


@dataclass(frozen=True)
class Thresholds:
    values: np.ndarray
    #: Indices of labels that kept the global threshold.
    fallback: list[int]


@dataclass(frozen=True)
class ValidationScores:
    map: float
    micro_f1: float
    macro_f1: float
    per_class_ap: dict[str, float]
    thresholds: dict[str, float]
    fallback_labels: list[str]


@dataclass(frozen=True)
class EpochMetrics:
    """One evaluation (after an epoch); the fields of the API's MetricPoint plus thresholds."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    map: float
    micro_f1: float
    macro_f1: float
    per_class_ap: dict[str, float]
    time_s: float
    thresholds: dict[str, float] = field(default_factory=dict)
    fallback_labels: list[str] = field(default_factory=list)

    def as_metric_point(self) -> dict[str, Any]:
        """Exactly the keys of the API's MetricPoint."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "map": self.map,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "per_class_ap": dict(self.per_class_ap),
            "time_s": self.time_s,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        return cls(**data)


def _check(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    binary = np.asarray(targets) > 0.5
    if probs.shape != binary.shape or probs.ndim != 2:
        raise ValueError(f"probabilities {probs.shape} and targets {binary.shape} must be equal 2-D shapes")
    return probs, binary


def per_class_average_precision(probs: np.ndarray, targets: np.ndarray) -> dict[int, float]:
    """AP of each label that has at least one positive, keyed by label index."""
    probs, binary = _check(probs, targets)
    return {
        j: float(average_precision_score(binary[:, j], probs[:, j]))
        for j in range(binary.shape[1])
        if binary[:, j].any()
    }


def mean_average_precision(probs: np.ndarray, targets: np.ndarray) -> float:
    """Macro AP over labels with a positive; 0.0 when no label has one (keeps JSON finite)."""
    ap = per_class_average_precision(probs, targets)
    return float(np.mean(list(ap.values()))) if ap else 0.0


def _best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold that maximises F1 for `score >= threshold`, placed midway between scores.

    A midpoint generalises better than the exact score of the last included sample.
    Ties in F1 go to the highest threshold, the more conservative choice.
    """
    precision, recall, cutoffs = precision_recall_curve(truth, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    lower = scores[scores < cutoffs[best]]
    threshold = (cutoffs[best] + lower.max()) / 2 if lower.size else cutoffs[best] / 2
    return float(np.clip(threshold, 0.0, 1.0))


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    min_positives: int = MIN_POSITIVES_TO_TUNE,
    default: float = DEFAULT_THRESHOLD,
) -> Thresholds:
    """Per-label F1-maximising thresholds; labels with < `min_positives` positives keep `default`."""
    probs, binary = _check(probs, targets)
    values = np.full(binary.shape[1], default, dtype=np.float64)
    fallback: list[int] = []
    for j in range(binary.shape[1]):
        if binary[:, j].sum() < min_positives or binary[:, j].all():
            fallback.append(j)
            continue
        values[j] = _best_f1_threshold(probs[:, j], binary[:, j])
    return Thresholds(values=values, fallback=fallback)


def f1_at_thresholds(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(micro F1 over all labels, macro F1 over labels with a positive) for `prob >= threshold`."""
    probs, binary = _check(probs, targets)
    predicted = probs >= np.asarray(thresholds)[None, :]
    micro = float(f1_score(binary, predicted, average="micro", zero_division=0))
    present = binary.any(axis=0)
    if not present.any():
        return micro, 0.0
    macro = float(f1_score(binary[:, present], predicted[:, present], average="macro", zero_division=0))
    return micro, macro


def score_validation(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    *,
    min_positives: int = MIN_POSITIVES_TO_TUNE,
    default_threshold: float = DEFAULT_THRESHOLD,
) -> ValidationScores:
    """Everything an evaluation reports except the losses."""
    probs, binary = _check(probs, targets)
    if len(labels) != probs.shape[1]:
        raise ValueError("one label name per column is needed")
    if not np.isfinite(probs).all():
        raise ValueError("the predicted probabilities contain NaN or infinity")
    ap = per_class_average_precision(probs, binary)
    tuned = tune_thresholds(probs, binary, min_positives=min_positives, default=default_threshold)
    micro, macro = f1_at_thresholds(probs, binary, tuned.values)
    return ValidationScores(
        map=float(np.mean(list(ap.values()))) if ap else 0.0,
        micro_f1=micro,
        macro_f1=macro,
        per_class_ap={labels[j]: value for j, value in ap.items()},
        thresholds={name: float(tuned.values[j]) for j, name in enumerate(labels)},
        fallback_labels=[labels[j] for j in tuned.fallback],
    )


@dataclass(frozen=True)
class HeldOutScores:
    """A held-out split scored at thresholds tuned elsewhere (never on the split itself)."""

    map: float
    micro_f1: float
    macro_f1: float
    per_class_ap: dict[str, float]


def score_held_out(
    probs: np.ndarray, targets: np.ndarray, labels: Sequence[str], thresholds: dict[str, float]
) -> HeldOutScores:
    """mAP and F1 of a test split at the validation-tuned `thresholds` (same definitions as validation)."""
    probs, binary = _check(probs, targets)
    if len(labels) != probs.shape[1]:
        raise ValueError("one label name per column is needed")
    if not np.isfinite(probs).all():
        raise ValueError("the predicted probabilities contain NaN or infinity")
    ap = per_class_average_precision(probs, binary)
    cutoffs = np.array([thresholds.get(name, DEFAULT_THRESHOLD) for name in labels], dtype=np.float64)
    micro, macro = f1_at_thresholds(probs, binary, cutoffs)
    return HeldOutScores(
        map=float(np.mean(list(ap.values()))) if ap else 0.0,
        micro_f1=micro,
        macro_f1=macro,
        per_class_ap={labels[j]: value for j, value in ap.items()},
    )
