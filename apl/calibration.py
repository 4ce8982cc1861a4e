"""Calibrating a multi-label model's scores: one temperature per label, and how calibrated they are.

Asymmetric losses (ASL, APL) push negatives' scores down on purpose, so a raw sigmoid
of 0.3 means different things for different losses. Temperature scaling divides each
label's logit by its own temperature T before the sigmoid, `p = sigmoid(z / T)`: the
ranking of every label stays as it is (so each label's AP is unchanged) and only how
sure the scores are moves.

Each label's T minimises the negative log-likelihood (binary cross-entropy) of its
validation cells against Platt's targets (Platt 1999, "Probabilistic outputs for support
vector machines", section 2.2): (N+ + 1) / (N+ + 2) for its N+ positives and
1 / (N- + 2) for its N- negatives instead of 1 and 0. With hard targets a validation
split the model separates perfectly (common for small ones) drives T towards 0 and
makes every later score 0 or 1; Platt's targets keep the fit finite and tend to 0/1 as
the split grows. The NLL is convex in 1/T, so its derivative is monotone and a
bisection on log(1/T) within [1/MAX_TEMPERATURE, 1/MIN_TEMPERATURE] finds the
minimum to machine precision, for all labels at once and always the same way. A
label with fewer than `min_positives` positives or without a negative keeps T = 1
(there is nothing reliable to fit).

Expected calibration error (ECE): all label cells of the split pooled, 15 equal-width
bins over [0, 1] (the last one closed), `sum_b n_b / N * |mean(y in b) - mean(p in b)|`.

Every function takes an optional `mask` of known cells (true = known); unknown cells
take part in neither the fit nor the ECE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apl.spec import CalibrationMethod
from apl.thresholds import check_scores

ECE_BINS = 15
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
#: Fewer positives than this and `fit_temperatures` leaves a label at T = 1.
MIN_POSITIVES_FOR_TEMPERATURE = 2
_BISECTION_STEPS = 60


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings (tanh form), in float64."""
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(values, dtype=np.float64)))
    return out


def apply_temperatures(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Calibrated probabilities `sigmoid(logit / T)`, one temperature per column."""
    scaled: np.ndarray = (
        np.asarray(logits, dtype=np.float64) / np.asarray(temperatures, dtype=np.float64)[None, :]
    )
    return sigmoid(scaled)


def _fittable(binary: np.ndarray, known: np.ndarray, min_positives: int) -> np.ndarray:
    positives = (binary & known).sum(axis=0)
    negatives = (~binary & known).sum(axis=0)
    fittable: np.ndarray = (positives >= min_positives) & (negatives > 0)
    return fittable


def platt_targets(binary: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per cell: (N+ + 1) / (N+ + 2) for a positive, 1 / (N- + 2) for a negative, per label."""
    positives = (binary & known).sum(axis=0).astype(np.float64)
    negatives = (~binary & known).sum(axis=0).astype(np.float64)
    smoothed: np.ndarray = np.where(
        binary, ((positives + 1) / (positives + 2))[None, :], (1 / (negatives + 2))[None, :]
    )
    return smoothed


def fit_temperatures(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    min_positives: int = MIN_POSITIVES_FOR_TEMPERATURE,
) -> np.ndarray:
    """Per-label temperatures minimising the validation NLL of `sigmoid(logit / T)` (see above)."""
    z, binary, known = check_scores(logits, targets, mask)
    if not np.isfinite(z).all():
        raise ValueError("the logits contain NaN or infinity")
    y = platt_targets(binary, known)
    weight = known.astype(np.float64)
    low = np.full(z.shape[1], np.log(1.0 / MAX_TEMPERATURE))
    high = np.full(z.shape[1], np.log(1.0 / MIN_TEMPERATURE))
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        # d NLL / d(1/T) = sum z * (sigmoid(z / T) - target), increasing in 1/T.
        slope = (weight * z * (sigmoid(z * np.exp(middle)[None, :]) - y)).sum(axis=0)
        rising = slope > 0
        high = np.where(rising, middle, high)
        low = np.where(rising, low, middle)
    temperatures = 1.0 / np.exp((low + high) / 2)
    fitted: np.ndarray = np.where(_fittable(binary, known, min_positives), temperatures, 1.0)
    return fitted


def _bin_index(probs: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((probs * bins).astype(np.int64), bins - 1)


def reliability_bins(
    probs: np.ndarray, targets: np.ndarray, *, mask: np.ndarray | None = None, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Per equal-width bin of the known cells: its range, count, mean score and positive rate."""
    scores, binary, known = check_scores(probs, targets, mask)
    p, y = scores[known], binary[known].astype(np.float64)
    index = _bin_index(p, bins)
    out: list[dict[str, Any]] = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        out.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": count,
                "confidence": float(p[inside].mean()) if count else None,
                "frequency": float(y[inside].mean()) if count else None,
            }
        )
    return out


def expected_calibration_error(
    probs: np.ndarray, targets: np.ndarray, *, mask: np.ndarray | None = None, bins: int = ECE_BINS
) -> float:
    """ECE over the known label cells, `bins` equal-width bins (see the module docstring)."""
    return ece_of(reliability_bins(probs, targets, mask=mask, bins=bins))


def ece_of(table: list[dict[str, Any]]) -> float:
    total = sum(row["count"] for row in table)
    if total == 0:
        return 0.0
    gaps = [row["count"] * abs(row["frequency"] - row["confidence"]) for row in table if row["count"]]
    return float(sum(gaps) / total)


@dataclass(frozen=True)
class CalibrationReport:
    """How the scores of one split were calibrated, and their ECE before and after."""

    method: CalibrationMethod
    temperatures: np.ndarray
    ece_before: float
    ece_after: float
    bins_before: list[dict[str, Any]]
    bins_after: list[dict[str, Any]]
    #: Per label: {"method", "reason"} of its calibrator (`apl.calibrators`); empty for temperatures.
    per_label: list[dict[str, Any]] = field(default_factory=list)
    #: Which scores `ece_after` is measured on (a split, or held-out folds of one).
    measured_on: str = "the same split the calibration was fitted on"

    def as_dict(self, labels: list[str]) -> dict[str, Any]:
        """The Evaluation's calibration block (plus temperatures and the reliability bins)."""
        out: dict[str, Any] = {
            "method": self.method,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "ece_bins": len(self.bins_before),
            "ece_measured_on": self.measured_on,
            "temperatures": {label: float(t) for label, t in zip(labels, self.temperatures, strict=True)},
            "reliability": {"before": self.bins_before, "after": self.bins_after},
        }
        if self.per_label:
            out["per_label"] = dict(zip(labels, self.per_label, strict=True))
        return out


def calibration_report(
    logits: np.ndarray,
    targets: np.ndarray,
    temperatures: np.ndarray,
    method: CalibrationMethod,
    *,
    mask: np.ndarray | None = None,
) -> CalibrationReport:
    """ECE and reliability bins of raw `sigmoid(z)` (before) and of `sigmoid(z / T)` (after)."""
    before = reliability_bins(sigmoid(logits), targets, mask=mask)
    after = reliability_bins(apply_temperatures(logits, temperatures), targets, mask=mask)
    return CalibrationReport(
        method=method,
        temperatures=np.asarray(temperatures, dtype=np.float64),
        ece_before=ece_of(before),
        ece_after=ece_of(after),
        bins_before=before,
        bins_after=after,
    )
