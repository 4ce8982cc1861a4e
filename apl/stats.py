"""Statistics of a loss tournament: intervals over seeds and a paired bootstrap over test samples.

Torch-free (numpy, with scipy's Student t quantile); the API imports it inside the
function that builds a leaderboard, never at import time.

- `t_interval`: mean, sample standard deviation and the two-sided Student-t interval
  of a candidate's per-seed test values (n - 1 degrees of freedom). With one value
  there is no spread to estimate: sd and the interval are None.
- `paired_bootstrap`: the difference best - runner-up of a test metric. Each
  replicate resamples the test samples of every seed with replacement, the same
  indices for both candidates (they were scored on the same samples: the comparison
  is paired), recomputes the metric of both on the resample, and averages the
  per-seed differences over seeds. Seeds whose test splits are the same samples (a
  separate test dataset) share their indices. The interval is the percentile
  interval of the replicates; the RNG is seeded, so a leaderboard is reproducible.
- The metrics (`map`, `macro_f1`, `micro_f1`) on a resample are computed from
  per-sample weights (how often each sample was drawn), vectorised over replicates;
  with unit weights they equal `apl.metrics` (scikit-learn's AP and F1). Unknown cells
  (partial labels: `Scored.known` False) count nowhere, as in `apl.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Metric = Literal["map", "macro_f1", "micro_f1"]
METRICS: tuple[Metric, ...] = ("map", "macro_f1", "micro_f1")
#: Bootstrap replicates of a leaderboard (stated in its `method`).
DEFAULT_RESAMPLES = 2000
#: Seed of the bootstrap RNG (stated in its `method`).
DEFAULT_BOOTSTRAP_SEED = 0
#: Replicates computed at once; bounds memory to a few (chunk x samples) float arrays.
_CHUNK = 250

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    """Mean, sample sd and the 95% t-interval of per-seed values; sd and bounds are None for n < 2."""

    n: int
    mean: float | None
    sd: float | None
    lo: float | None
    hi: float | None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The Student-t interval of the mean of `values` (independent seeds), n - 1 degrees of freedom."""
    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return Interval(0, None, None, None, None)
    mean = float(data.mean())
    if n == 1:
        return Interval(1, mean, None, None, None)
    from scipy.stats import t as student_t

    sd = float(data.std(ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Scored:
    """One candidate's test predictions on one seed: probabilities, 0/1 targets, decision thresholds."""

    probs: npt.NDArray[np.floating]
    targets: npt.NDArray[np.integer] | npt.NDArray[np.floating]
    thresholds: npt.NDArray[np.floating]
    #: True where the target is annotated; None: every cell is.
    known: npt.NDArray[np.bool_] | None = None

    def known_cells(self) -> npt.NDArray[np.bool_]:
        """The known-cell mask, all True when none was given."""
        if self.known is None:
            return np.ones(np.shape(self.probs), dtype=bool)
        return np.asarray(self.known, dtype=bool)

    @property
    def num_samples(self) -> int:
        return int(self.probs.shape[0])


def _weighted_ap(scores: Floats, truth: npt.NDArray[np.bool_], weights: Floats) -> Floats:
    """AP of one label for each row of `weights` (sample counts); NaN where a row has no positive.

    Scores are grouped into distinct values like scikit-learn's precision-recall curve,
    so tied samples (and every copy of a resampled one) count at one threshold. Only
    groups holding a positive add to AP (recall moves nowhere else), so precision and
    recall are read at those groups' ends alone.
    """
    if scores.size == 0:  # every cell of the label unknown on this split
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, positive = scores[order], truth[order]
    # Counts are small integers: float32 sums are exact (below 2**24) and halve the memory traffic.
    w = weights[:, order].astype(np.float32)
    tp = np.cumsum(w * positive, axis=1, dtype=np.float32)
    seen = np.cumsum(w, axis=1, dtype=np.float32)
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    starts = np.r_[0, ends[:-1] + 1]
    group_has_positive = np.add.reduceat(positive.astype(np.int64), starts) > 0
    ends, starts = ends[group_has_positive], starts[group_has_positive]
    tp_end = tp[:, ends].astype(np.float64)
    tp_before = np.where(starts > 0, tp[:, np.maximum(starts - 1, 0)], 0.0).astype(np.float64)
    seen_end = seen[:, ends].astype(np.float64)
    total = tp[:, -1].astype(np.float64)
    precision = np.divide(tp_end, seen_end, out=np.zeros_like(tp_end), where=seen_end > 0)
    gained = np.sum((tp_end - tp_before) * precision, axis=1)
    result: Floats = np.divide(gained, total, out=np.full_like(total, np.nan), where=total > 0)
    return result


def _weighted_map(scored: Scored, weights: Floats) -> Floats:
    """Macro AP over the labels with a positive in each resample (0 when none has one)."""
    probs = np.asarray(scored.probs, dtype=np.float64)
    truth = np.asarray(scored.targets) > 0.5
    known = scored.known_cells()
    per_label = np.stack(
        [
            _weighted_ap(probs[known[:, j], j], truth[known[:, j], j], weights[:, known[:, j]])
            for j in range(probs.shape[1])
        ],
        1,
    )
    present = ~np.isnan(per_label)
    counts = present.sum(axis=1)
    sums = np.where(present, per_label, 0.0).sum(axis=1)
    result: Floats = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return result


def _weighted_f1(scored: Scored, weights: Floats, average: Literal["macro", "micro"]) -> Floats:
    """F1 at the fixed thresholds per resample: micro over all labels, macro over labels with a positive."""
    predicted = np.asarray(scored.probs) >= np.asarray(scored.thresholds)[None, :]
    truth = np.asarray(scored.targets) > 0.5
    known = scored.known_cells()
    tp = weights @ (predicted & truth & known).astype(np.float64)
    fp = weights @ (predicted & ~truth & known).astype(np.float64)
    fn = weights @ (~predicted & truth & known).astype(np.float64)
    if average == "micro":
        num, den = 2 * tp.sum(axis=1), 2 * tp.sum(axis=1) + fp.sum(axis=1) + fn.sum(axis=1)
        micro: Floats = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return micro
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    present = (tp + fn) > 0
    counts = present.sum(axis=1)
    sums = np.where(present, f1, 0.0).sum(axis=1)
    macro: Floats = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return macro


def weighted_metric(metric: Metric, scored: Scored, weights: Floats) -> Floats:
    """`metric` of `scored` for each row of `weights` (shape: replicates x samples)."""
    if weights.ndim != 2 or weights.shape[1] != scored.num_samples:
        raise ValueError("weights must have one column per test sample")
    if metric == "map":
        return _weighted_map(scored, weights)
    if metric in ("macro_f1", "micro_f1"):
        return _weighted_f1(scored, weights, "macro" if metric == "macro_f1" else "micro")
    raise ValueError(f"unknown metric {metric!r}")


def metric_value(metric: Metric, scored: Scored) -> float:
    """`metric` on the whole split (every sample once)."""
    return float(weighted_metric(metric, scored, np.ones((1, scored.num_samples)))[0])


@dataclass(frozen=True)
class PairedSeed:
    """Two candidates scored on the same test samples of one seed.

    Seeds with the same `group` (the same test samples, e.g. a separate test dataset)
    are resampled with the same indices; None: a group of its own.
    """

    best: Scored
    other: Scored
    group: str | None = None

    def __post_init__(self) -> None:
        if self.best.probs.shape != self.other.probs.shape:
            raise ValueError("a paired comparison needs both candidates scored on the same samples")


@dataclass(frozen=True)
class BootstrapResult:
    """best - runner-up: the observed mean difference over seeds and its percentile interval."""

    delta: float
    lo: float
    hi: float
    resamples: int
    seed: int
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def _counts(rng: np.random.Generator, replicates: int, n: int) -> Floats:
    """How often each of n samples is drawn in each of `replicates` resamples of size n."""
    draws = rng.integers(0, n, size=(replicates, n)) + (np.arange(replicates) * n)[:, None]
    counts: Floats = np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n).astype(float)
    return counts


def paired_bootstrap(
    pairs: Sequence[PairedSeed],
    metric: Metric,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> BootstrapResult:
    """The paired bootstrap of mean(best - other) over seeds; see the module docstring."""
    if not pairs:
        raise ValueError("at least one seed with both candidates is needed")
    delta = float(np.mean([metric_value(metric, p.best) - metric_value(metric, p.other) for p in pairs]))
    rng = np.random.default_rng(seed)
    replicates: list[Floats] = []
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        shared: dict[str, Floats] = {}
        total = np.zeros(size)
        for pair in pairs:
            if pair.group is not None and pair.group in shared:
                weights = shared[pair.group]
            else:
                weights = _counts(rng, size, pair.best.num_samples)
                if pair.group is not None:
                    shared[pair.group] = weights
            best = weighted_metric(metric, pair.best, weights)
            total += best - weighted_metric(metric, pair.other, weights)
        replicates.append(total / len(pairs))
    values = np.concatenate(replicates)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return BootstrapResult(delta, float(lo), float(hi), resamples, seed, len(pairs))
