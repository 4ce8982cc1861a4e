"""Budgets: explicit epochs mean exactly that; left out, a step budget that evidence stops."""

from __future__ import annotations

from pathlib import Path

from apl.catalog import FAMILY_DEFAULTS, resolve_base_model
from apl.spec import Hyperparameters, JobSpec
from apl.training import train
from apl.training.budget import MIN_EPOCHS_CAP, resolve_budget, step_budget, warmup_steps
from tests.apl.conftest import TINY_IMAGE_MODEL
from tests.apl.test_training import image_config


def test_explicit_epochs_are_exact_and_a_left_out_epochs_is_a_step_budget() -> None:
    exact = resolve_budget(Hyperparameters(epochs=4, early_stopping_patience=2), "minilm-l6", 50)
    assert (exact.epochs, exact.patience, exact.min_steps, exact.auto) == (4, 2, 0, False)
    bounds = resolve_base_model("minilm-l6").defaults.budget
    auto = resolve_budget(Hyperparameters(), "minilm-l6", 50)
    assert auto.auto and auto.epochs * 50 >= bounds.max_steps > (auto.epochs - 1) * 50
    assert auto.patience == bounds.patience and auto.min_steps == bounds.min_steps
    tiny = resolve_budget(Hyperparameters(), "minilm-l6", 1)  # a tiny set: not hundreds of one-step epochs
    assert tiny.min_steps == min(bounds.min_steps, MIN_EPOCHS_CAP)
    assert step_budget("timm:resnet10t") == FAMILY_DEFAULTS["image"].budget
    spec = JobSpec(dataset_id="d", base_model="minilm-l6")
    assert spec.hyperparameters.epochs is None and spec.hyperparameters.learning_rate == 2e-4


def test_a_step_budget_warms_up_over_its_minimum_not_over_the_maximum_evidence_rarely_reaches() -> None:
    exact = resolve_budget(Hyperparameters(epochs=4), "minilm-l6", 50)
    assert warmup_steps(0.1, exact, 200) == 20  # explicit epochs: a share of the whole run
    auto = resolve_budget(Hyperparameters(), "minilm-l6", 50)
    assert auto.max_steps == 1500 and auto.min_steps == 150
    assert warmup_steps(0.1, auto, 1500) == 15  # not 150: most runs stop after a few hundred steps
    tiny = resolve_budget(Hyperparameters(), "minilm-l6", 2)
    assert warmup_steps(0.1, tiny, 1500) == 2 and warmup_steps(0.0, auto, 1500) == 0


def test_a_left_out_epochs_trains_until_validation_stops_improving_and_says_why(image_dataset: Path) -> None:
    result = train(image_config(image_dataset, epochs=None))
    budget = resolve_budget(Hyperparameters(), TINY_IMAGE_MODEL, 4)
    assert result.stop_reason == "no_improvement" and result.stop_message is not None
    assert "did not improve for 3 evaluations" in result.stop_message
    assert MIN_EPOCHS_CAP <= result.epochs_completed < budget.epochs
    assert result.history[-1].step >= budget.min_steps
    best = max(m.map for m in result.history)
    assert result.best_metrics is not None and result.best_metrics.map == best
    assert all(m.map <= best for m in result.history[-3:])


def test_explicit_epochs_say_so(image_dataset: Path) -> None:
    result = train(image_config(image_dataset, epochs=2))
    assert result.stop_reason == "epochs" and result.epochs_completed == 2
    assert result.stop_message is not None and "the 2 epochs asked for" in result.stop_message
