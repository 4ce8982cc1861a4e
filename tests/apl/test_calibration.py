"""Temperature scaling and the expected calibration error (`apl.calibration`)."""

from __future__ import annotations

import numpy as np
import pytest

from apl.calibration import (
    ECE_BINS,
    MIN_TEMPERATURE,
    apply_temperatures,
    calibration_report,
    expected_calibration_error,
    fit_temperatures,
    platt_targets,
    reliability_bins,
    sigmoid,
)
from apl.metrics import per_class_average_precision

#: How each label's logits are mis-scaled: 4x overconfident, 0.3x underconfident, right.
SCALES = np.array([4.0, 0.3, 1.0])


def _mis_scaled(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) of a model whose true log-odds are `s` but that outputs SCALES * s."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(-0.5, 2.0, size=(n, len(SCALES)))
    targets = (rng.random(true_logits.shape) < sigmoid(true_logits)).astype(np.float32)
    return true_logits * SCALES[None, :], targets


def _platt_nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    t = platt_targets(targets[:, None] > 0.5, np.ones((len(targets), 1), dtype=bool))[:, 0]
    p = np.clip(sigmoid(logits / temperature), 1e-15, 1 - 1e-15)
    return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).sum())


def test_calibration_lowers_ece_of_a_mis_scaled_model_and_keeps_its_ranking() -> None:
    logits, targets = _mis_scaled()
    temperatures = fit_temperatures(logits, targets)
    # The fit undoes the mis-scaling (Platt's targets shift it a little at n = 4000).
    np.testing.assert_allclose(temperatures, SCALES, rtol=0.1)
    raw, calibrated = sigmoid(logits), apply_temperatures(logits, temperatures)
    before = expected_calibration_error(raw, targets)
    after = expected_calibration_error(calibrated, targets)
    assert before > 0.05 and after < before / 3, (before, after)
    # Dividing each label's logits by a positive number never reorders its scores.
    assert per_class_average_precision(calibrated, targets) == per_class_average_precision(raw, targets)
    report = calibration_report(logits, targets, temperatures, "temperature")
    assert (report.ece_before, report.ece_after) == pytest.approx((before, after))


def test_each_temperature_minimises_the_nll_against_platt_targets() -> None:
    logits, targets = _mis_scaled(n=600, seed=3)
    temperatures = fit_temperatures(logits, targets)
    for j, t in enumerate(temperatures):
        best = _platt_nll(logits[:, j], targets[:, j], t)
        for nearby in (t * 0.99, t * 1.01, t * 0.8, t * 1.25):
            assert best <= _platt_nll(logits[:, j], targets[:, j], nearby) + 1e-9
    np.testing.assert_array_equal(temperatures, fit_temperatures(logits, targets))  # deterministic


def test_a_perfectly_separated_label_gets_a_finite_temperature() -> None:
    """With hard targets the NLL would fall forever as T -> 0; Platt's targets stop it."""
    logits = np.array([[3.0], [2.0], [1.5], [-1.0], [-2.0], [-0.5]])
    targets = np.array([[1], [1], [1], [0], [0], [0]])
    hard = [float(np.log1p(np.exp(-np.abs(logits) / t)).sum()) for t in (1.0, 0.5, 0.1)]
    assert hard == sorted(hard, reverse=True)  # hard targets: sharper is always "better"
    (temperature,) = fit_temperatures(logits, targets)
    assert MIN_TEMPERATURE * 2 < temperature < 5
    calibrated = apply_temperatures(logits, np.array([temperature]))[:, 0]
    # No score is pushed to 0 or 1: the targets were (3 + 1) / (3 + 2) and 1 / (3 + 2).
    assert calibrated.min() > 0.05 and calibrated.max() < 0.95
    assert calibrated[:3].min() > calibrated[3:].max()  # and the ranking is the same


def test_labels_with_too_few_positives_or_no_negative_keep_temperature_one() -> None:
    logits = np.array([[2.0, 1.0, 0.5], [1.0, 2.0, -1.0], [-1.0, 3.0, 0.2], [0.5, 1.5, -0.3]])
    targets = np.array([[1, 1, 0], [0, 1, 1], [0, 1, 0], [0, 1, 1]])
    temperatures = fit_temperatures(logits, targets)
    assert temperatures[0] == 1.0  # one positive
    assert temperatures[1] == 1.0  # no negative
    assert temperatures[2] != 1.0


def test_ece_by_hand_with_15_equal_width_bins_over_all_cells() -> None:
    probs = np.array([[0.05, 0.95], [0.05, 1.0], [0.5, 0.95], [0.55, 0.02]])
    targets = np.array([[0, 1], [1, 1], [1, 0], [0, 0]])
    bins = reliability_bins(probs, targets)
    assert len(bins) == ECE_BINS and bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    # Bin 0 [0, 1/15): 0.05, 0.05, 0.02 with one positive; bin 7 [7/15, 8/15): 0.5 (positive);
    # bin 8: 0.55 (negative); bin 14 [14/15, 1] (closed): 0.95, 1.0, 0.95 with two positives.
    assert [b["count"] for b in bins if b["count"]] == [3, 1, 1, 3]
    assert bins[14]["confidence"] == pytest.approx((0.95 + 1.0 + 0.95) / 3)
    expected = (3 * abs(1 / 3 - 0.04) + 1 * abs(1 - 0.5) + 1 * abs(0 - 0.55) + 3 * abs(2 / 3 - (2.9 / 3))) / 8
    assert expected_calibration_error(probs, targets) == pytest.approx(expected)
    assert bins[3]["confidence"] is None and bins[3]["frequency"] is None


def test_masked_fit_and_ece_equal_those_of_the_known_cells_alone() -> None:
    logits, targets = _mis_scaled(n=300, seed=5)
    rng = np.random.default_rng(9)
    mask = rng.random(logits.shape) > 0.3
    masked = fit_temperatures(logits, targets, mask=mask)
    alone = [
        fit_temperatures(logits[mask[:, j], j : j + 1], targets[mask[:, j], j : j + 1])[0] for j in range(3)
    ]
    np.testing.assert_allclose(masked, alone, rtol=1e-12)
    probs = apply_temperatures(logits, masked)
    known_cells = (probs[mask][:, None], targets[mask][:, None])
    assert expected_calibration_error(probs, targets, mask=mask) == pytest.approx(
        expected_calibration_error(*known_cells)
    )
    # Unknown cells may hold anything: changing them changes nothing.
    scrambled = np.where(mask, targets, 1 - targets)
    np.testing.assert_array_equal(fit_temperatures(logits, scrambled, mask=mask), masked)


def test_non_finite_logits_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        fit_temperatures(np.array([[np.inf], [0.0]]), np.array([[1], [0]]))
