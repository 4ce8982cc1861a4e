"""Per-label calibrators chosen on held-out folds (`apl.calibrators`), with known answers.

The synthetic model: every label's true log-odds s; the model outputs z = 0.6 s - 2, the
squeeze and downward shift an asymmetric loss (ASL, APL, focal) leaves on purpose. A
temperature cannot undo a shift; Platt's bias can.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apl.calibration import expected_calibration_error, sigmoid
from apl.calibration_layer import CalibrationLayer
from apl.calibrators import (
    Calibration,
    LabelCalibration,
    calibrated_report,
    fit_calibration,
    fit_label,
    log_loss_of,
)
from apl.metrics import per_class_average_precision


def _shifted(n: int = 2000, labels: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets): true log-odds s ~ N(-1.5, 2); the model says 0.6 s - 2."""
    rng = np.random.default_rng(seed)
    truth_logits = rng.normal(-1.5, 2.0, size=(n, labels))
    targets = (rng.random(truth_logits.shape) < sigmoid(truth_logits)).astype(np.float32)
    return 0.6 * truth_logits - 2.0, targets


def test_auto_undoes_an_asymmetric_loss_shift_where_temperature_cannot() -> None:
    logits, targets = _shifted()
    before = expected_calibration_error(sigmoid(logits), targets)
    auto = fit_calibration(logits, targets, "auto")
    temperature = fit_calibration(logits, targets, "temperature")
    after = expected_calibration_error(auto.held_out, targets)
    assert before > 0.1 and after <= 0.05 and after < before / 2, (before, after)
    # Platt recovers the inverse map s = (z + 2) / 0.6: scale ~1.67, bias ~3.33.
    for label in auto.calibration.labels:
        assert label.method in ("platt", "isotonic")
        if label.method == "platt":
            assert label.scale == pytest.approx(1 / 0.6, rel=0.15)
            assert label.bias == pytest.approx(2 / 0.6, rel=0.15)
    # Temperature has no bias: on held-out cells it stays worse calibrated than auto.
    assert expected_calibration_error(temperature.held_out, targets) > 2 * after
    # No calibrator reorders a label's samples.
    calibrated = auto.calibration.apply(logits)
    assert per_class_average_precision(calibrated, targets) == pytest.approx(
        per_class_average_precision(logits, targets)
    )


def test_isotonic_is_a_candidate_only_for_large_supports() -> None:
    logits, targets = _shifted(n=4000, labels=1)
    large = fit_calibration(logits, targets, "auto").calibration.labels[0]
    assert set(large.held_out_log_loss) == {"none", "platt", "isotonic"}
    small = fit_calibration(logits[:100], targets[:100], "auto").calibration.labels[0]
    assert set(small.held_out_log_loss) == {"none", "platt"}  # fewer than 50 positives


def test_a_label_with_three_positives_moves_little_and_keeps_its_order() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.0, 300)
    y = np.zeros(300, bool)
    y[np.argsort(z)[-3:]] = True  # the three highest scores are the positives
    chosen, held_out = fit_label(z, y, "auto")
    assert chosen.method in ("none", "platt")
    if chosen.method == "platt":
        assert 0 < chosen.scale < 5  # the identity prior holds the slope finite
    assert np.all(np.diff(chosen.apply(np.sort(z))) >= 0)
    assert held_out.shape == z.shape
    two, _ = fit_label(z, np.isin(np.arange(300), np.argsort(z)[-2:]), "auto")
    assert two.method == "none" and "too few to calibrate" in two.reason


def test_a_perfectly_separable_label_gets_a_finite_calibration() -> None:
    z = np.r_[np.linspace(1, 4, 40), np.linspace(-4, -1, 160)]
    y = np.r_[np.ones(40, bool), np.zeros(160, bool)]
    chosen, held_out = fit_label(z, y, "platt")
    assert chosen.method == "platt" and np.isfinite(chosen.scale) and 0 < chosen.scale < 50
    p = chosen.apply(z)
    assert p[y].min() > p[~y].max()  # still separated
    assert log_loss_of(held_out, y) < log_loss_of(sigmoid(z), y)


@pytest.mark.parametrize("method", ["platt", "auto"])
def test_logits_in_the_thousands_are_calibrated_not_taken_for_divergence(method: str) -> None:
    """An overconfident model (a head with large weights) gives logits far beyond +-40: the
    bias-only Platt fit must still find its root (it once searched only [-40, 40] and failed)."""
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.3
    z = np.where(y, 1.0, -1.0) * 3000.0 + rng.normal(0.0, 2000.0, 200)
    chosen, held_out = fit_label(z, y, method)  # type: ignore[arg-type]
    assert np.isfinite(held_out).all() and np.isfinite(chosen.apply(z)).all()


def test_a_label_without_signal_is_not_given_confidence_it_lacks() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(-2.0, 1.5, 1000)
    y = rng.random(1000) < 0.3  # unrelated to z
    chosen, held_out = fit_label(z, y, "auto")
    # Calibrated, the scores sit near the base rate instead of spreading over [0, 1].
    assert chosen.method != "none"
    assert abs(held_out.mean() - y.mean()) < 0.03 and held_out.std() < 0.1


def test_a_calibration_that_does_not_help_is_not_applied() -> None:
    rng = np.random.default_rng(3)
    true_logits = rng.normal(0.0, 2.0, 600)
    y = rng.random(600) < sigmoid(true_logits)  # the raw scores are already calibrated
    chosen, held_out = fit_label(true_logits, y, "temperature")
    if chosen.method == "none":
        assert "did not lower the held-out log loss" in chosen.reason
        np.testing.assert_array_equal(held_out, sigmoid(true_logits))
    else:  # it may help by a hair; then it must have
        losses = chosen.held_out_log_loss
        assert losses["temperature"] < losses["none"]
    off, _ = fit_label(true_logits, y, "none")
    assert off.method == "none"


def test_the_torch_layer_matches_numpy_for_every_kind() -> None:
    calibration = Calibration(
        "auto",
        (
            LabelCalibration("platt", scale=0.7, bias=-1.2),
            LabelCalibration("isotonic", knots=((-0.5, 0.0, 0.4, 3.0), (0.1, 0.3, 0.8, 0.9))),
            LabelCalibration.of_temperature(2.0),
            LabelCalibration(),
            LabelCalibration("isotonic", knots=((1.0,), (0.25,))),
        ),
    )
    logits = np.random.default_rng(4).normal(0, 3, (64, 5)).astype(np.float32)
    expected = calibration.apply(logits)
    got = CalibrationLayer(calibration)(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert calibration.temperatures.tolist() == [1.0, 1.0, 2.0, 1.0, 1.0]
    stored = calibration.as_dict(list("abcde"))
    again = Calibration.from_config(stored, list("abcde"))
    np.testing.assert_allclose(again.apply(logits), expected)
    # An artifact holding temperatures only (before per-label calibrators) still loads.
    old = Calibration.from_config({"method": "temperature", "temperatures": {"a": 2.0, "b": 1.0}}, ["a", "b"])
    np.testing.assert_allclose(old.apply(logits[:, :2]), sigmoid(logits[:, :2] / np.array([2.0, 1.0])))


def test_the_report_measures_after_on_held_out_scores() -> None:
    logits, targets = _shifted(n=600, seed=5)
    fit = fit_calibration(logits, targets, "auto")
    report = calibrated_report(logits, targets, fit.calibration, held_out=fit.held_out, measured_on="folds")
    assert report.ece_after == pytest.approx(expected_calibration_error(fit.held_out, targets))
    assert report.ece_before == pytest.approx(expected_calibration_error(sigmoid(logits), targets))
    block = report.as_dict(["a", "b"])
    assert block["per_label"]["a"]["method"] == fit.calibration.labels[0].method
    assert block["ece_measured_on"] == "folds"
