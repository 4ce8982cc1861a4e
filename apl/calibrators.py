"""Per-label calibrators chosen on held-out folds: Platt, isotonic, temperature or none.

Why not temperature alone: asymmetric losses (ASL, APL, focal) push every negative's
score down on purpose, so a label's logits are both mis-scaled *and shifted*; a
temperature (`sigmoid(z / T)`, no bias) can only squeeze such scores toward 0.5 (the
README demo put 3 of 7 labels at the bound T = 20 and still ended at ECE 0.215).

The calibrators of one label, each a monotone map of its logit z:

- `none`: the raw `sigmoid(z)`;
- `temperature`: `sigmoid(z / T)` (`apl.calibration.fit_temperatures`), kept as an option;
- `platt`: `sigmoid(a * z + b)`, scikit-learn's `LogisticRegression` on z, *regularised
  toward the identity* (a = 1, b = 0): beside the label's cells the fit sees
  `PLATT_PRIOR_SAMPLES` pseudo-samples drawn from the identity itself (every observed z
  once as a positive with weight sigmoid(z) and once as a negative with weight
  1 - sigmoid(z), the weights summing to `PLATT_PRIOR_SAMPLES`). Their log loss is
  smallest at the identity, so a label with 3 positives moves only a little from the
  raw scores, a label with hundreds follows its data, and a perfectly separated label
  gets a finite slope. A calibrator never reorders a label's samples: a fitted slope at or
  below `MIN_PLATT_SCALE` (noise on a label without signal, or 3 positives) is not kept,
  and the bias alone is fitted (slope 1, scipy's `brentq` on the score equation);
- `isotonic`: scikit-learn's `IsotonicRegression` of the label on z (clipped at both
  ends, outputs kept within [1/(n+2), 1 - 1/(n+2)]), only for labels with at least
  `ISOTONIC_MIN_CLASS` positives and negatives: with fewer it overfits (scikit-learn's
  own calibration guide advises against it below ~1,000 samples).

Choosing (`CalibratedClassifierCV`-style cross-fitting): the label's known cells are cut
into stratified folds (k = min(5, positives, negatives)); each candidate is fitted on
k - 1 folds and scores the held-out one, so every cell gets an out-of-fold score per
candidate. The candidate of lowest out-of-fold log loss is refitted on every cell and
kept *only if* it beats the raw scores' out-of-fold log loss (`"auto"` tries platt and,
where allowed, isotonic; a named method tries that one). A label with fewer than
`MIN_POSITIVES_TO_CALIBRATE` positives (or negatives) keeps `none` and says why. The
out-of-fold scores of the chosen calibrator are what the held-out ECE and reliability
diagram are measured on: the calibrator that scored a cell never saw it.

Everything here is NumPy and scikit-learn; `apl.calibration_layer` applies the same maps
in torch (and so inside an ONNX graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from apl.calibration import CalibrationReport, ece_of, fit_temperatures, reliability_bins, sigmoid
from apl.spec import CalibrationMethod
from apl.thresholds import check_scores

LabelMethod = Literal["none", "temperature", "platt", "isotonic"]

#: Fewer validation positives (or negatives) than this and a label is not calibrated.
MIN_POSITIVES_TO_CALIBRATE = 3
#: Weight of the identity pseudo-samples that hold a small label's Platt fit near sigmoid(z).
PLATT_PRIOR_SAMPLES = 10.0
#: A Platt slope at or below this would flatten or reverse the label's ranking: the bias alone moves.
MIN_PLATT_SCALE = 0.05
#: Positives and negatives each needed before isotonic regression is a candidate.
ISOTONIC_MIN_CLASS = 50
MAX_FOLDS = 5
_EPS = 1e-6


@dataclass(frozen=True)
class LabelCalibration:
    """One label's calibrator: `sigmoid(scale * z + bias)`, or a piecewise-linear map of z.

    `knots` (isotonic only) are (logits ascending, probabilities): below the first logit
    the first probability, above the last the last, linear in between (`np.interp`).
    """

    method: LabelMethod = "none"
    scale: float = 1.0
    bias: float = 0.0
    knots: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    #: Why this method (or why none): the held-out evidence in words.
    reason: str = ""
    #: Out-of-fold log loss of each candidate tried, "none" included.
    held_out_log_loss: dict[str, float] = field(default_factory=dict)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of this label's logits (any shape), float64."""
        z = np.asarray(logits, dtype=np.float64)
        if self.knots is not None:
            out: np.ndarray = np.interp(z, np.asarray(self.knots[0]), np.asarray(self.knots[1]))
            return out
        return sigmoid(self.scale * z + self.bias)

    @property
    def temperature(self) -> float:
        """1 / scale for a temperature (the contract's per-label temperature); 1 otherwise."""
        return 1.0 / self.scale if self.method == "temperature" else 1.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "scale": self.scale, "bias": self.bias}
        if self.knots is not None:
            out["knots"] = {"logits": list(self.knots[0]), "probabilities": list(self.knots[1])}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelCalibration:
        """The stored form (`as_dict`), as an artifact's config.json carries it."""
        knots = data.get("knots")
        pair = None
        if knots is not None:
            pair = (
                tuple(float(v) for v in knots["logits"]),
                tuple(float(v) for v in knots["probabilities"]),
            )
        return cls(
            method=data.get("method", "none"),
            scale=float(data.get("scale", 1.0)),
            bias=float(data.get("bias", 0.0)),
            knots=pair,
        )

    @classmethod
    def of_temperature(cls, temperature: float) -> LabelCalibration:
        if temperature == 1.0:
            return cls()
        return cls(method="temperature", scale=1.0 / float(temperature))


@dataclass(frozen=True)
class Calibration:
    """The calibrators of every label (in label order) and the method the job asked for."""

    requested: CalibrationMethod
    labels: tuple[LabelCalibration, ...]

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of a (samples, labels) logit matrix."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != len(self.labels):
            raise ValueError(f"logits {z.shape} do not have one column per label ({len(self.labels)})")
        if len(z) == 0:
            return np.zeros(z.shape)
        return np.stack([c.apply(z[:, j]) for j, c in enumerate(self.labels)], axis=1)

    @property
    def temperatures(self) -> np.ndarray:
        return np.array([c.temperature for c in self.labels], dtype=np.float64)

    def as_dict(self, names: Sequence[str]) -> dict[str, Any]:
        """An artifact's `calibration`: method, per-label temperatures (contract) and maps."""
        return {
            "method": self.requested,
            "temperatures": {n: c.temperature for n, c in zip(names, self.labels, strict=True)},
            "per_label": {n: c.as_dict() for n, c in zip(names, self.labels, strict=True)},
        }

    @classmethod
    def from_config(cls, calibration: dict[str, Any] | None, names: Sequence[str]) -> Calibration:
        """From an artifact's `calibration` block; older artifacts hold temperatures only."""
        block = calibration or {}
        per_label = block.get("per_label")
        if isinstance(per_label, dict):
            labels = tuple(LabelCalibration.from_dict(per_label[n]) for n in names)
        else:
            temperatures = block.get("temperatures") or {}
            labels = tuple(LabelCalibration.of_temperature(float(temperatures.get(n, 1.0))) for n in names)
        return cls(requested=block.get("method", "none"), labels=labels)

    @classmethod
    def identity(cls, count: int, requested: CalibrationMethod = "none") -> Calibration:
        return cls(requested=requested, labels=tuple(LabelCalibration() for _ in range(count)))


def log_loss_of(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean binary log loss, probabilities clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(probs, _EPS, 1 - _EPS)
    return float(-np.mean(np.where(truth, np.log(p), np.log(1 - p))))


def _fit_platt(z: np.ndarray, y: np.ndarray) -> LabelCalibration:
    from sklearn.linear_model import LogisticRegression

    prior = sigmoid(z) * (PLATT_PRIOR_SAMPLES / len(z))
    features = np.concatenate([z, z, z])[:, None]
    labels = np.concatenate([y, np.ones(len(z), bool), np.zeros(len(z), bool)])
    weights = np.concatenate([np.ones(len(z)), prior, PLATT_PRIOR_SAMPLES / len(z) - prior])
    model = LogisticRegression(C=1e6, max_iter=1000).fit(features, labels, sample_weight=weights)
    scale = float(model.coef_[0, 0])
    if scale > MIN_PLATT_SCALE:
        return LabelCalibration(method="platt", scale=scale, bias=float(model.intercept_[0]))
    return LabelCalibration(method="platt", scale=1.0, bias=_shift_only(features[:, 0], labels, weights))


def _shift_only(z: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """The bias b of `sigmoid(z + b)` of least weighted log loss: where the weighted mean score
    equals the weighted positive rate (scipy's brentq on that monotone equation)."""
    from scipy.optimize import brentq

    target = float((weights * y).sum())

    def excess(b: float) -> float:
        return float((weights * sigmoid(z + b)).sum()) - target

    # The bracket spans the scores themselves: a very confident model's logits can lie far
    # beyond +-40, and a shift that moves them all past the sigmoid's range brackets the root.
    reach = float(np.abs(z).max(initial=0.0)) + 40.0
    return float(brentq(excess, -reach, reach))


def _fit_isotonic(z: np.ndarray, y: np.ndarray) -> LabelCalibration:
    from sklearn.isotonic import IsotonicRegression

    floor = 1.0 / (len(z) + 2)
    model = IsotonicRegression(y_min=floor, y_max=1 - floor, out_of_bounds="clip").fit(z, y.astype(float))
    knots = (tuple(float(v) for v in model.X_thresholds_), tuple(float(v) for v in model.y_thresholds_))
    return LabelCalibration(method="isotonic", knots=knots)


def _fit_temperature(z: np.ndarray, y: np.ndarray) -> LabelCalibration:
    (temperature,) = fit_temperatures(z[:, None], y[:, None].astype(np.float64), min_positives=1)
    return LabelCalibration(method="temperature", scale=1.0 / float(temperature))


_FITTERS = {"platt": _fit_platt, "isotonic": _fit_isotonic, "temperature": _fit_temperature}


def candidates_for(method: CalibrationMethod, positives: int, negatives: int) -> list[str]:
    """The calibrators tried on a label (see the module docstring)."""
    if method == "none":
        return []
    if method != "auto":
        return [method]
    large = min(positives, negatives) >= ISOTONIC_MIN_CLASS
    return ["platt", "isotonic"] if large else ["platt"]


def _out_of_fold(
    z: np.ndarray, y: np.ndarray, fitter: str, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    held_out = np.empty(len(z))
    for train, test in folds:
        held_out[test] = _FITTERS[fitter](z[train], y[train]).apply(z[test])
    return held_out


def fit_label(
    z: np.ndarray, y: np.ndarray, method: CalibrationMethod, *, seed: int = 0
) -> tuple[LabelCalibration, np.ndarray]:
    """(the label's calibrator, its out-of-fold probabilities) from its known cells."""
    from sklearn.model_selection import StratifiedKFold

    raw = sigmoid(z)
    positives, negatives = int(y.sum()), int((~y).sum())
    tried = candidates_for(method, positives, negatives)
    if not tried:
        return LabelCalibration(reason="calibration is off"), raw
    if min(positives, negatives) < MIN_POSITIVES_TO_CALIBRATE:
        reason = f"{positives} positives and {negatives} negatives: too few to calibrate"
        return LabelCalibration(reason=reason), raw
    k = min(MAX_FOLDS, positives, negatives)
    folds = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(z, y))
    scores = {"none": raw} | {name: _out_of_fold(z, y, name, folds) for name in tried}
    losses = {name: log_loss_of(p, y) for name, p in scores.items()}
    best = min(tried, key=lambda name: losses[name])
    if losses[best] >= losses["none"]:
        reason = (
            f"{best} did not lower the held-out log loss ({losses[best]:.4f} vs raw {losses['none']:.4f})"
        )
        return LabelCalibration(reason=reason, held_out_log_loss=losses), raw
    fitted = _FITTERS[best](z, y)
    reason = f"held-out log loss {losses['none']:.4f} -> {losses[best]:.4f} ({k} folds)"
    chosen = LabelCalibration(fitted.method, fitted.scale, fitted.bias, fitted.knots, reason, losses)
    return chosen, scores[best]


@dataclass(frozen=True)
class CalibrationFit:
    """The fitted calibration and the out-of-fold probabilities it was judged by."""

    calibration: Calibration
    #: Per cell the probability from a calibrator that did not see the cell (raw where none).
    held_out: np.ndarray


def fit_calibration(
    logits: np.ndarray,
    targets: np.ndarray,
    method: CalibrationMethod,
    *,
    mask: np.ndarray | None = None,
    seed: int = 0,
) -> CalibrationFit:
    """Each label's calibrator chosen on held-out folds of its known cells (module docstring)."""
    z, binary, known = check_scores(logits, targets, mask)
    if not np.isfinite(z).all():
        raise ValueError("the logits contain NaN or infinity")
    held_out = sigmoid(z)
    labels: list[LabelCalibration] = []
    for j in range(z.shape[1]):
        rows = known[:, j]
        chosen, scores = fit_label(z[rows, j], binary[rows, j], method, seed=seed)
        held_out[rows, j] = scores
        labels.append(chosen)
    return CalibrationFit(Calibration(requested=method, labels=tuple(labels)), held_out)


def calibrated_report(
    logits: np.ndarray,
    targets: np.ndarray,
    calibration: Calibration,
    *,
    mask: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
    measured_on: str,
) -> CalibrationReport:
    """ECE and reliability bins of raw `sigmoid(z)` (before) and of the calibrated scores (after).

    `held_out` (the out-of-fold scores of `fit_calibration`) replaces the calibrated scores
    of the split the calibrators were fitted on, so that "after" is always measured on
    cells no calibrator saw; a test split needs none (`calibration.apply` never saw it).
    """
    after_scores = calibration.apply(logits) if held_out is None else held_out
    before = reliability_bins(sigmoid(logits), targets, mask=mask)
    after = reliability_bins(after_scores, targets, mask=mask)
    return CalibrationReport(
        method=calibration.requested,
        temperatures=calibration.temperatures,
        ece_before=ece_of(before),
        ece_after=ece_of(after),
        bins_before=before,
        bins_after=after,
        per_label=[{"method": c.method, "reason": c.reason or None} for c in calibration.labels],
        measured_on=measured_on,
    )
