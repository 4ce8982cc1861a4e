"""apl.stats against known cases: t-intervals, resampled metrics equal scikit-learn, bootstrap verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from apl.metrics import f1_at_thresholds, mean_average_precision
from apl.stats import (
    Metric,
    PairedSeed,
    Scored,
    metric_value,
    paired_bootstrap,
    t_interval,
    weighted_metric,
)


def _scored(seed: int, n: int = 120, labels: int = 6, signal: float = 0.4, *, ties: bool = False) -> Scored:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, labels)) < 0.25).astype(np.uint8)
    probs = np.clip(targets * signal + rng.random((n, labels)) * (1 - signal), 0, 1).astype(np.float32)
    if ties:
        probs = np.round(probs, 1)  # many equal scores
    return Scored(probs, targets, np.full(labels, 0.5))


def test_t_interval_of_known_values() -> None:
    interval = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2 df) = 4.302652729911275
    assert (interval.n, interval.mean, interval.sd) == (3, 2.0, 1.0)
    assert interval.lo == pytest.approx(2 - 4.302652729911275 / np.sqrt(3))
    assert interval.hi == pytest.approx(2 + 4.302652729911275 / np.sqrt(3))
    assert t_interval([0.4, 0.4]).lo == t_interval([0.4, 0.4]).hi == pytest.approx(0.4)
    single = t_interval([0.7])
    assert (single.n, single.mean, single.sd, single.lo, single.hi) == (1, 0.7, None, None, None)
    assert t_interval([]).n == 0


@pytest.mark.parametrize("ties", [False, True])
def test_metrics_on_a_resample_equal_scikit_learn_on_the_resampled_rows(ties: bool) -> None:
    scored = _scored(0, ties=ties)
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, scored.num_samples, scored.num_samples) for _ in range(4)]
    weights = np.stack([np.bincount(r, minlength=scored.num_samples) for r in rows]).astype(float)
    maps = weighted_metric("map", scored, weights)
    macro = weighted_metric("macro_f1", scored, weights)
    micro = weighted_metric("micro_f1", scored, weights)
    for k, r in enumerate(rows):
        probs, targets = scored.probs[r], scored.targets[r]
        assert maps[k] == pytest.approx(mean_average_precision(probs, targets), abs=1e-12)
        expected_micro, expected_macro = f1_at_thresholds(probs, targets, scored.thresholds)
        assert (micro[k], macro[k]) == pytest.approx((expected_micro, expected_macro), abs=1e-12)
    assert metric_value("map", scored) == pytest.approx(mean_average_precision(scored.probs, scored.targets))


def test_a_label_without_positives_in_a_resample_is_left_out_of_map() -> None:
    targets = np.array([[1, 0], [0, 1], [0, 0], [1, 0]], dtype=np.uint8)
    probs = np.array([[0.9, 0.2], [0.1, 0.8], [0.3, 0.4], [0.7, 0.1]], dtype=np.float32)
    scored = Scored(probs, targets, np.full(2, 0.5))
    only_label_0 = np.array([[1.0, 0.0, 1.0, 1.0]])  # sample 1 (the only positive of label 1) not drawn
    assert weighted_metric("map", scored, only_label_0)[0] == pytest.approx(1.0)


def test_identical_candidates_have_no_difference_and_no_winner() -> None:
    pairs = [PairedSeed(_scored(s), _scored(s)) for s in range(3)]
    result = paired_bootstrap(pairs, "map", resamples=300)
    assert (result.delta, result.lo, result.hi) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero


def test_a_clearly_better_candidate_wins() -> None:
    better = [PairedSeed(_scored(s, signal=0.6), _scored(s, signal=0.1)) for s in range(3)]
    result = paired_bootstrap(better, "map", resamples=500)
    assert result.delta > 0.2 and result.lo > 0 and result.excludes_zero
    assert result.seeds == 3 and result.resamples == 500


def _equally_good(seed: int, n: int = 80) -> PairedSeed:
    """Two candidates drawn from the same process: same targets and signal, their own noise."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 5)) < 0.3).astype(np.uint8)

    def candidate() -> Scored:
        probs = np.clip(targets * 0.3 + rng.random(targets.shape) * 0.7, 0, 1).astype(np.float32)
        return Scored(probs, targets, np.full(5, 0.5))

    return PairedSeed(candidate(), candidate())


@pytest.mark.parametrize("metric", ["map", "macro_f1", "micro_f1"])
def test_equally_good_candidates_have_no_clear_winner(metric: Metric) -> None:
    result = paired_bootstrap([_equally_good(s) for s in range(6, 9)], metric, resamples=500)
    assert result.lo < 0 < result.hi and not result.excludes_zero


@pytest.mark.parametrize("metric", ["map", "micro_f1"])
def test_the_interval_covers_a_zero_difference_about_95_percent_of_the_time(metric: Metric) -> None:
    """Over 200 tournaments of equally good candidates a 95% interval excludes 0 about 10 times."""
    tournaments = [[_equally_good(1000 + 3 * k + s) for s in range(3)] for k in range(200)]
    excluded = sum(paired_bootstrap(pairs, metric, resamples=200).excludes_zero for pairs in tournaments)
    assert 2 <= excluded <= 22


def test_the_bootstrap_is_reproducible_from_its_seed() -> None:
    pairs = [PairedSeed(_scored(s, signal=0.45), _scored(s + 10, signal=0.4)) for s in range(2)]
    first = paired_bootstrap(pairs, "micro_f1", resamples=200, seed=3)
    assert paired_bootstrap(pairs, "micro_f1", resamples=200, seed=3) == first
    assert paired_bootstrap(pairs, "micro_f1", resamples=200, seed=4) != first


def test_seeds_on_the_same_test_samples_share_their_resamples() -> None:
    a, b = _scored(0, signal=0.5), _scored(1, signal=0.3)
    b = Scored(b.probs, a.targets, b.thresholds)
    shared = paired_bootstrap([PairedSeed(a, b, "t"), PairedSeed(a, b, "t")], "map", resamples=200, seed=0)
    single = paired_bootstrap([PairedSeed(a, b, "t")], "map", resamples=200, seed=0)
    # Two seeds resampled with the same indices and equal predictions: exactly one seed's spread.
    assert (shared.lo, shared.hi) == pytest.approx((single.lo, single.hi))
    apart = paired_bootstrap([PairedSeed(a, b), PairedSeed(a, b)], "map", resamples=200, seed=0)
    assert apart.hi - apart.lo < shared.hi - shared.lo  # independent draws average out


def test_mismatched_pairs_and_no_pairs_are_refused() -> None:
    with pytest.raises(ValueError):
        PairedSeed(_scored(0, n=10), _scored(0, n=12))
    with pytest.raises(ValueError):
        paired_bootstrap([], "map")
