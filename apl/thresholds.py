"""Per-label decision thresholds chosen on a validation split, one rule per policy.

Every policy reads scikit-learn's `precision_recall_curve` of a label: the points
(threshold t, precision, recall) for `score >= t`, t running over the label's scores.

- `max_f1`: the point of highest F1 (ties: the highest threshold);
- `precision_at`: the lowest threshold whose precision reaches `target`; when none
  does, the point of highest precision (ties: the lowest threshold), and the label
  says that the target was not reached;
- `recall_at`: the highest threshold whose recall is still at least `target` (always
  reachable: the lowest score keeps every positive);
- `fixed`: `target` for every label, nothing fitted to the data (the policy's threshold, so
  `source="tuned"` as the contract's sources are "tuned" (set by the policy) | "fallback").

A tuned threshold sits midway between the chosen point's score and the next lower
score, so that it decides the validation samples exactly as the point does while not
sitting on one sample's score.

When the evidence cannot carry a tuned threshold, the label keeps `FALLBACK_THRESHOLD`
(0.5 on calibrated scores: "more likely than not") and says why (`source="fallback"`,
`reasons[j]`):

- fewer than `min_positives` (`MIN_POSITIVES_TO_TUNE` = 5) positives, or no negative:
  with 2 to 4 positives max-F1 tuning lands anywhere between "label nothing" and "label
  everything" (the README demo's `short`, 4 positives, was tuned to 0.033);
- under `max_f1`, a threshold that does not earn its keep on data it was not tuned on:
  the label's known rows are cut into stratified folds (k = min(5, positives)), a
  threshold is tuned on k - 1 folds and decides the held-out one, and the pooled
  held-out F1 must beat both the fallback's and that of labelling every sample (the
  F1 a threshold below every score gets for free, which max-F1 drifts to when the
  scores carry no signal). `tests/apl/test_thresholds.py` simulates labels of weak to
  perfect separation at 3 to 40 positives: this rule never does worse than the fallback
  on a fresh population at the 10th percentile, where raw tuning does at 3 to 10 positives.

`mask` (optional, same shape as the scores, true for known cells) leaves unknown
cells out: each label is tuned on its known rows only, exactly as if the others were
not there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.metrics import precision_recall_curve

from apl.decisions import FALLBACK_THRESHOLD
from apl.spec import DecisionPolicy

#: Fewer validation positives than this and a label's threshold is not tuned.
MIN_POSITIVES_TO_TUNE = 5
#: Stratified folds (at most) of the held-out check of a max-F1 threshold.
TUNING_FOLDS = 5

ThresholdSource = Literal["tuned", "fallback"]


@dataclass(frozen=True)
class ThresholdChoice:
    """The thresholds of every label, where each came from, and whether its target was met."""

    policy: DecisionPolicy
    target: float | None
    values: np.ndarray
    sources: list[ThresholdSource]
    #: Per label: True/False for precision_at and recall_at on tuned labels; None otherwise.
    target_reached: list[bool | None]
    #: Per label: why it kept the fallback (None for a tuned label).
    reasons: list[str | None] = field(default_factory=list)

    @property
    def fallback(self) -> list[int]:
        """Indices of the labels that kept the fallback threshold."""
        return [j for j, source in enumerate(self.sources) if source == "fallback"]


def check_scores(
    probs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 scores, boolean targets, boolean known-cell mask), all of one 2-D shape.

    A NaN target is an unknown cell (`apl.data.StoredDataset`), so it is unknown in the mask
    whether or not a `mask` is given: no caller can count it as a negative by forgetting one.
    """
    scores = np.asarray(probs, dtype=np.float64)
    raw = np.asarray(targets)
    binary = raw > 0.5
    if scores.shape != binary.shape or scores.ndim != 2:
        raise ValueError(f"probabilities {scores.shape} and targets {binary.shape} must be equal 2-D shapes")
    known = np.ones(binary.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if known.shape != binary.shape:
        raise ValueError(f"the mask {known.shape} must have the shape of the targets {binary.shape}")
    if np.issubdtype(raw.dtype, np.floating):
        known = known & ~np.isnan(raw)
    return scores, binary, known


def _midpoint(scores: np.ndarray, cutoff: float) -> float:
    """Midway between `cutoff` and the highest score below it (half of it when none is)."""
    lower = scores[scores < cutoff]
    threshold = (cutoff + lower.max()) / 2 if lower.size else cutoff / 2
    return float(np.clip(threshold, 0.0, 1.0))


def _curve(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, thresholds of `score >= threshold`, one entry per threshold (ascending)."""
    precision, recall, cutoffs = precision_recall_curve(truth, scores)
    return precision[:-1], recall[:-1], cutoffs  # sklearn's last point (recall 0) has no threshold


def _max_f1(precision: np.ndarray, recall: np.ndarray) -> int:
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return int(np.flatnonzero(f1 == f1.max())[-1])


def _precision_at(precision: np.ndarray, target: float) -> tuple[int, bool]:
    reaching = np.flatnonzero(precision >= target)
    if reaching.size:
        return int(reaching[0]), True
    return int(np.flatnonzero(precision == precision.max())[0]), False


def _recall_at(recall: np.ndarray, target: float) -> tuple[int, bool]:
    keeping = np.flatnonzero(recall >= target)  # recall falls as the threshold rises
    return int(keeping[-1]), True


def tune_label(
    scores: np.ndarray, truth: np.ndarray, policy: DecisionPolicy, target: float | None
) -> tuple[float, bool | None]:
    """(threshold, target reached or None) of one label with positives and negatives."""
    precision, recall, cutoffs = _curve(scores, truth)
    reached: bool | None = None
    if policy == "max_f1":
        best = _max_f1(precision, recall)
    elif policy == "precision_at":
        best, reached = _precision_at(precision, float(target or 0.0))
    elif policy == "recall_at":
        best, reached = _recall_at(recall, float(target or 0.0))
    else:
        raise ValueError(f"the {policy} policy is not tuned per label")
    return _midpoint(scores, float(cutoffs[best])), reached


def _f1_counts(scores: np.ndarray, truth: np.ndarray, threshold: float) -> np.ndarray:
    """(true positives, predicted positives, positives) of `score >= threshold`."""
    chosen = scores >= threshold
    return np.array([(chosen & truth).sum(), chosen.sum(), truth.sum()], dtype=np.float64)


def _f1(counts: np.ndarray) -> float:
    denominator = counts[1] + counts[2]
    return float(2 * counts[0] / denominator) if denominator else 0.0


def held_out_check(scores: np.ndarray, truth: np.ndarray, default: float, *, seed: int = 0) -> str | None:
    """None when max-F1 tuning beats the fallback and "label everything" on held-out folds;
    else the reason in words (see the module docstring)."""
    from sklearn.model_selection import StratifiedKFold

    k = int(min(TUNING_FOLDS, truth.sum(), (~truth).sum()))
    if k < 2:
        return "too few negatives to check a tuned threshold on held-out folds"
    tuned, fallback, everything = np.zeros(3), np.zeros(3), np.zeros(3)
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(scores, truth):
        threshold, _ = tune_label(scores[train], truth[train], "max_f1", None)
        tuned += _f1_counts(scores[test], truth[test], threshold)
        fallback += _f1_counts(scores[test], truth[test], default)
        everything += _f1_counts(scores[test], truth[test], -np.inf)
    if _f1(tuned) > max(_f1(fallback), _f1(everything)):
        return None
    return (
        f"a tuned threshold did not beat the fallback on held-out folds (F1 {_f1(tuned):.3f} vs "
        f"{_f1(fallback):.3f} at {default:g}, {_f1(everything):.3f} labelling every sample)"
    )


def fallback_reason(
    truth: np.ndarray,
    scores: np.ndarray,
    policy: DecisionPolicy,
    min_positives: int,
    default: float,
    check: bool = True,
) -> str | None:
    """Why a label keeps the fallback threshold, or None when its evidence carries tuning."""
    positives = int(truth.sum())
    if positives < min_positives:
        return f"{positives} validation positives: fewer than {min_positives}, too few to tune a threshold"
    if truth.all():
        return "no validation negatives: nothing to tune a threshold against"
    if policy == "max_f1" and check:
        return held_out_check(scores, truth, default)
    return None


def choose_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    policy: DecisionPolicy = "max_f1",
    target: float | None = None,
    *,
    mask: np.ndarray | None = None,
    min_positives: int = MIN_POSITIVES_TO_TUNE,
    default: float = FALLBACK_THRESHOLD,
    check_held_out: bool = True,
) -> ThresholdChoice:
    """The thresholds of every label under `policy` (see the module docstring).

    `check_held_out=False` skips max-F1's held-out check (the tuning mechanics alone)."""
    scores, binary, known = check_scores(probs, targets, mask)
    if policy != "max_f1" and target is None:
        raise ValueError(f"the {policy} policy needs a target")
    labels = binary.shape[1]
    if policy == "fixed":
        value = float(target)  # type: ignore[arg-type]
        return ThresholdChoice(
            policy, value, np.full(labels, value), ["tuned"] * labels, [None] * labels, [None] * labels
        )
    values = np.full(labels, default, dtype=np.float64)
    sources: list[ThresholdSource] = []
    reached: list[bool | None] = []
    reasons: list[str | None] = []
    for j in range(labels):
        rows = known[:, j]
        truth = binary[rows, j]
        reason = fallback_reason(truth, scores[rows, j], policy, min_positives, default, check_held_out)
        reasons.append(reason)
        if reason is not None:
            sources.append("fallback")
            reached.append(None)
            continue
        values[j], hit = tune_label(scores[rows, j], truth, policy, target)
        sources.append("tuned")
        reached.append(hit)
    return ThresholdChoice(policy, target, values, sources, reached, reasons)
