"""Evaluation rounds: a step budget on a long pass evaluates (and checkpoints) inside the pass."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler

from apl.catalog import StepBudget
from apl.spec import Hyperparameters
from apl.training import budget as budgets
from apl.training import train
from apl.training.budget import resolve_budget, round_batches
from apl.training.rounds import RoundSlice, steps_after
from tests.apl.test_training import Recorder, assert_histories_close, image_config


def test_a_long_pass_is_split_into_rounds_that_end_at_the_step_budget() -> None:
    bounds = budgets.step_budget("minilm-l6")
    large = resolve_budget(Hyperparameters(), "minilm-l6", 3125)  # 100,000 samples at batch 32
    every = bounds.max_steps / budgets.EVALUATIONS_PER_BUDGET
    assert large.rounds_per_epoch == 32 and large.auto
    per_round = 3125 / large.rounds_per_epoch
    assert per_round <= every and steps_after(large, 3125, large.epochs - 1) < bounds.max_steps
    assert bounds.max_steps <= steps_after(large, 3125, large.epochs) < bounds.max_steps + per_round + 1
    # a pass shorter than the interval keeps one evaluation per pass; explicit epochs always do
    assert resolve_budget(Hyperparameters(), "minilm-l6", 50).rounds_per_epoch == 1
    assert resolve_budget(Hyperparameters(epochs=2), "minilm-l6", 3125).rounds_per_epoch == 1


@pytest.mark.parametrize(("batches", "rounds"), [(10, 3), (3125, 32), (7, 7), (5, 1)])
def test_the_rounds_of_a_pass_cover_its_batches_once_in_order(batches: int, rounds: int) -> None:
    parts = [round_batches(batches, rounds, k) for k in range(rounds)]
    assert parts[0][0] == 0 and parts[-1][1] == batches
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(parts))


def test_a_round_slice_draws_the_pass_order_and_keeps_its_part() -> None:
    generator = torch.Generator()
    order = RandomSampler(range(23), generator=generator)
    generator.manual_seed(7)
    whole = list(order)
    rounds = RoundSlice(order, batch_size=4, batches=6, rounds=3)  # 6 batches, the last of 3 samples
    seen = []
    for part, size in enumerate([8, 8, 7]):
        rounds.select(part)
        generator.manual_seed(7)  # each round reseeds as the loop does, so it draws the same order
        assert len(rounds) == size
        seen += list(rounds)
    assert seen == whole


@pytest.fixture
def short_passes_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny image set's 4-step pass is split in 2 rounds of 2 steps, 8 steps in all."""
    monkeypatch.setattr(budgets, "MIN_ROUND_STEPS", 2)
    monkeypatch.setattr(budgets, "step_budget", lambda _: StepBudget(min_steps=2, max_steps=8, patience=100))


@pytest.mark.usefixtures("short_passes_split")
def test_a_step_budget_evaluates_and_resumes_inside_a_pass(image_dataset: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    straight = train(image_config(image_dataset, epochs=None), [recorder])
    info = recorder.of("begin")[0]
    assert (info.rounds_per_epoch, info.steps_per_epoch, info.epochs, info.total_steps) == (2, 4, 4, 8)
    assert [(m.epoch, m.step) for m in straight.history] == [(1, 2), (2, 4), (3, 6), (4, 8)]
    assert straight.stop_reason == "max_steps"
    assert [p.step for p in recorder.of("step") if p.round_end] == [2, 4, 6, 8]

    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    config = image_config(image_dataset, epochs=None, checkpoint_path=checkpoint)
    interrupted = train(config, [Recorder(stop_after_epoch=3)])  # mid-way through the second pass
    assert interrupted.stopped and interrupted.epochs_completed == 3
    again = Recorder()
    resumed = train(
        image_config(image_dataset, epochs=None, checkpoint_path=checkpoint, resume_from=checkpoint), [again]
    )
    assert again.of("begin")[0].start_step == 6 and [p.step for p in again.of("step")] == [7, 8]
    assert_histories_close(resumed.history, straight.history)
    for a, b in zip(
        resumed.model.module.state_dict().values(), straight.model.module.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
