"""Validation metrics for multi-label classification and per-class threshold tuning.

mAP is the macro average of scikit-learn's `average_precision_score` over the labels
that have at least one positive in the validation split (AP is undefined without
one). Decision thresholds are tuned per label on the validation split to maximise
that label's F1 (`apl.thresholds`, which also holds the other decision policies); a
label with too few validation positives to tune on falls back to the global threshold
and is recorded as such. F1 scores are computed at the tuned thresholds: micro over
all labels, macro over the labels that have a positive.

Every function takes an optional `mask` of known cells (true = known), for partially
labelled data: unknown cells count nowhere, so a masked result equals the unmasked one
computed on the known cells alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from apl.decisions import FALLBACK_THRESHOLD
from apl.thresholds import MIN_POSITIVES_TO_TUNE, check_scores, choose_thresholds

DEFAULT_THRESHOLD = FALLBACK_THRESHOLD


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


def per_class_average_precision(
    probs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> dict[int, float]:
    """AP of each label that has at least one (known) positive, keyed by label index.

    With `mask`, each label's AP is computed on its known rows only.
    """
    scores, binary, known = check_scores(probs, targets, mask)
    out: dict[int, float] = {}
    for j in range(binary.shape[1]):
        rows = known[:, j]
        if binary[rows, j].any():
            out[j] = float(average_precision_score(binary[rows, j], scores[rows, j]))
    return out


def mean_average_precision(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Macro AP over labels with a positive; 0.0 when no label has one (keeps JSON finite)."""
    ap = per_class_average_precision(probs, targets, mask)
    return float(np.mean(list(ap.values()))) if ap else 0.0


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    min_positives: int = MIN_POSITIVES_TO_TUNE,
    default: float = DEFAULT_THRESHOLD,
    mask: np.ndarray | None = None,
    check_held_out: bool = True,
) -> Thresholds:
    """Per-label F1-maximising thresholds; labels with < `min_positives` positives keep `default`.

    The `max_f1` policy of `apl.thresholds.choose_thresholds`, which holds the other policies.
    """
    choice = choose_thresholds(
        probs,
        targets,
        "max_f1",
        mask=mask,
        min_positives=min_positives,
        default=default,
        check_held_out=check_held_out,
    )
    return Thresholds(values=choice.values, fallback=choice.fallback)


def f1_at_thresholds(
    probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """(micro F1 over all labels, macro F1 over labels with a positive) for `prob >= threshold`.

    With `mask`, only known cells count: micro F1 over the known cells, each label's F1 over
    its known rows.
    """
    scores, binary, known = check_scores(probs, targets, mask)
    predicted = scores >= np.asarray(thresholds)[None, :]
    micro = float(f1_score(binary[known], predicted[known], zero_division=0)) if known.any() else 0.0
    per_label = [
        float(f1_score(binary[known[:, j], j], predicted[known[:, j], j], zero_division=0))
        for j in range(binary.shape[1])
        if binary[known[:, j], j].any()
    ]
    return micro, float(np.mean(per_label)) if per_label else 0.0


def _checked(
    probs: np.ndarray, targets: np.ndarray, labels: Sequence[str], mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """check_scores plus what a scored split also needs: a name per column and finite scores."""
    probs, binary, known = check_scores(probs, targets, mask)
    if len(labels) != probs.shape[1]:
        raise ValueError("one label name per column is needed")
    if not np.isfinite(probs).all():
        raise ValueError("the predicted probabilities contain NaN or infinity")
    return probs, binary, known


def score_validation(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    *,
    min_positives: int = MIN_POSITIVES_TO_TUNE,
    default_threshold: float = DEFAULT_THRESHOLD,
    mask: np.ndarray | None = None,
) -> ValidationScores:
    """Everything an evaluation reports except the losses (known cells only, with `mask`)."""
    probs, binary, known = _checked(probs, targets, labels, mask)
    ap = per_class_average_precision(probs, binary, known)
    tuned = tune_thresholds(probs, binary, min_positives=min_positives, default=default_threshold, mask=known)
    micro, macro = f1_at_thresholds(probs, binary, tuned.values, known)
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
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    thresholds: dict[str, float],
    mask: np.ndarray | None = None,
) -> HeldOutScores:
    """mAP and F1 of a test split at the validation-tuned `thresholds` (same definitions as validation)."""
    probs, binary, known = _checked(probs, targets, labels, mask)
    ap = per_class_average_precision(probs, binary, known)
    cutoffs = np.array([thresholds.get(name, DEFAULT_THRESHOLD) for name in labels], dtype=np.float64)
    micro, macro = f1_at_thresholds(probs, binary, cutoffs, known)
    return HeldOutScores(
        map=float(np.mean(list(ap.values()))) if ap else 0.0,
        micro_f1=micro,
        macro_f1=macro,
        per_class_ap={labels[j]: value for j, value in ap.items()},
    )
