"""A finalized model's logits turned into split predictions and result fields (torch-free).

The training loop scores its fine-tuned model with these, and the linear probe
(`apl.training.baselines`) its own logits with the same functions, so both models'
validation and test figures are computed one way: the fitted calibrators applied,
the thresholds the decision policy chose on validation, `apl.metrics` definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from apl.calibrators import calibrated_report
from apl.evaluation import Finalized, build_evaluation
from apl.metrics import score_held_out
from apl.predictions import SplitPredictions


def held_out_predictions(
    logits: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    final: Finalized,
    *,
    indices: np.ndarray,
    source: str,
    label_counts: Sequence[float],
    min_labels: int,
) -> tuple[SplitPredictions, dict[str, Any]]:
    """The test split's calibrated scores, decisions and Evaluation document (`split: "test"`).

    Raises ValueError on non-finite logits (the caller says what diverged).
    """
    cutoffs = np.asarray(final.thresholds.values, dtype=np.float64)
    probs = final.calibrator.apply(logits)
    scores = score_held_out(probs, targets, labels, dict(zip(labels, cutoffs, strict=True)))
    report = calibrated_report(logits, targets, final.calibrator, measured_on="the test split")
    evaluation = build_evaluation(
        probs,
        targets,
        labels,
        final.thresholds,
        report,
        split="test",
        label_counts=label_counts,
        min_labels=min_labels,
    )
    predictions = SplitPredictions(
        split="test",
        labels=list(labels),
        probs=probs.astype(np.float32),
        targets=(targets > 0.5).astype(np.uint8),
        known=~np.isnan(targets),
        thresholds=cutoffs,
        indices=np.asarray(indices, dtype=np.int64),
        source=source,
        map=scores.map,
        micro_f1=scores.micro_f1,
        macro_f1=scores.macro_f1,
        per_class_ap=scores.per_class_ap,
    )
    return predictions, evaluation


def validation_predictions(
    logits: np.ndarray, targets: np.ndarray, labels: Sequence[str], final: Finalized, indices: np.ndarray
) -> SplitPredictions:
    """The validation scores as the final model gives them (calibrators applied).

    Out of sample (no validation sample was trained on), so `apl.label_issues` can rank the
    split's given labels by how much the model doubts them.
    """
    evaluation = final.evaluation
    return SplitPredictions(
        split="validation",
        labels=list(labels),
        probs=final.calibrator.apply(logits).astype(np.float32),
        targets=(targets > 0.5).astype(np.uint8),
        known=~np.isnan(targets),
        thresholds=np.asarray(final.thresholds.values, dtype=np.float64),
        indices=np.asarray(indices, dtype=np.int64),
        source="fraction",
        map=float(evaluation["map"]),
        micro_f1=float(evaluation["micro_f1"]),
        macro_f1=float(evaluation["macro_f1"]),
    )


def finalized_fields(final: Finalized, labels: Sequence[str]) -> dict[str, Any]:
    """TrainResult's thresholds, fallback labels, calibration, threshold sources and evaluation."""
    choice = final.thresholds
    return {
        "thresholds": {name: float(choice.values[j]) for j, name in enumerate(labels)},
        "fallback_labels": [labels[j] for j in choice.fallback],
        "temperatures": {name: float(final.temperatures[j]) for j, name in enumerate(labels)},
        "calibrator": final.calibrator,
        "threshold_sources": dict(zip(labels, choice.sources, strict=True)),
        "evaluation": final.evaluation,
    }
