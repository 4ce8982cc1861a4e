"""How long a run trains: the user's epochs, or a step budget that evidence stops.

A fixed epoch count is the wrong unit across data sets: two epochs are ~3,000 optimizer
steps on a large set and ~100 on a small one. A job that sets `epochs` gets exactly that
many (with its own `early_stopping_patience`, if any). A job that leaves it out trains
until validation mAP stops improving: at most the base model's `max_steps` (rounded up to
whole epochs, since the loop evaluates and checkpoints at epoch ends), and not stopped
before its `min_steps` (or `MIN_EPOCHS_CAP` epochs, whichever comes first, so that a tiny
set is not trained for hundreds of one-step epochs), then stopped after `patience`
evaluations without a higher validation mAP (`apl.catalog.StepBudget`). The run records
why it stopped (`stop_reason`).

A step budget is also evaluated by steps, not only at the ends of passes over the data: on a
large set one pass can be thousands of steps (more than `max_steps`), so evidence could only
stop the run after it. Such a pass is split into `rounds_per_epoch` rounds of about
`max_steps / EVALUATIONS_PER_BUDGET` steps (at least `MIN_ROUND_STEPS`), each ending with an
evaluation and a checkpoint, and the budget counts rounds (`Budget.epochs` is then the number
of rounds, which is what the job's progress and metric points number). Small sets, whose pass
is shorter than that, keep one evaluation per pass, and a job's explicit `epochs` always
evaluates once per pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apl.catalog import FAMILY_DEFAULTS, StepBudget, resolve_base_model
from apl.spec import Hyperparameters

#: The most epochs a step budget may take (the Hyperparameters bound on `epochs`).
MAX_EPOCHS = 1000
#: On a tiny set, `min_steps` is met after at most this many epochs.
MIN_EPOCHS_CAP = 10
#: A step budget is evaluated about this many times over its `max_steps` (when passes are long).
EVALUATIONS_PER_BUDGET = 15
#: Never fewer optimizer steps than this between two evaluations of a split pass.
MIN_ROUND_STEPS = 20

#: Why a run ended (TrainResult.stop_reason).
STOP_EPOCHS = "epochs"
STOP_NO_IMPROVEMENT = "no_improvement"
STOP_MAX_STEPS = "max_steps"
STOP_CANCELLED = "stopped"


@dataclass(frozen=True)
class Budget:
    """The resolved budget of one run."""

    #: The most epochs the run takes.
    epochs: int
    #: Evaluations without a higher validation mAP that end the run (None: never early).
    patience: int | None
    #: Optimizer steps before which early stopping never ends the run.
    min_steps: int
    #: True when the job left `epochs` out (a step budget).
    auto: bool
    max_steps: int | None = None
    #: Evaluation rounds per pass over the training data (1: an evaluation at each pass's end);
    #: above 1, `epochs` counts rounds.
    rounds_per_epoch: int = 1


def step_budget(base_model: str) -> StepBudget:
    """The base model's step bounds (its family's for `timm:` / `hf:` references)."""
    try:
        return resolve_base_model(base_model).defaults.budget
    except ValueError:
        return FAMILY_DEFAULTS["text"].budget


def resolve_budget(hp: Hyperparameters, base_model: str, steps_per_epoch: int) -> Budget:
    """The run's budget for a training split of `steps_per_epoch` optimizer steps an epoch."""
    if hp.epochs is not None:
        return Budget(epochs=hp.epochs, patience=hp.early_stopping_patience, min_steps=0, auto=False)
    bounds = step_budget(base_model)
    per_epoch = max(steps_per_epoch, 1)
    rounds = rounds_per_epoch(per_epoch, bounds.max_steps)
    per_round = math.ceil(per_epoch / rounds)
    epochs = min(MAX_EPOCHS, max(1, math.ceil(bounds.max_steps / per_round)))
    min_steps = min(bounds.min_steps, MIN_EPOCHS_CAP * per_epoch)
    patience = hp.early_stopping_patience or bounds.patience
    return Budget(epochs, patience, min_steps, auto=True, max_steps=bounds.max_steps, rounds_per_epoch=rounds)


def warmup_steps(fraction: float, budget: Budget, total_steps: int) -> int:
    """How many steps the learning rate warms up for: `fraction` of the run, or, on a step budget,
    of the steps every run trains (`min_steps`).

    A step budget plans its schedule over `max_steps`, but evidence usually ends it far sooner
    (a few hundred of 1500 steps on the data sets of docs/results.md): a warm-up of a tenth of
    the maximum would then be most of the run, at a fraction of the learning rate asked for.
    """
    if not budget.auto:
        return round(fraction * total_steps)
    return round(fraction * min(total_steps, budget.min_steps))


def rounds_per_epoch(steps_per_epoch: int, max_steps: int) -> int:
    """How many evaluation rounds a pass of `steps_per_epoch` steps is split into (module docstring)."""
    every = max(MIN_ROUND_STEPS, math.ceil(max_steps / EVALUATIONS_PER_BUDGET))
    return max(1, min(steps_per_epoch, math.ceil(steps_per_epoch / every)))


def round_batches(steps_per_epoch: int, rounds: int, round_index: int) -> tuple[int, int]:
    """The batches [start, stop) of a pass that round `round_index` (0-based within it) trains."""
    return (round_index * steps_per_epoch) // rounds, ((round_index + 1) * steps_per_epoch) // rounds


def stop_reason(budget: Budget, *, stopped: bool, early_stopped: bool) -> str:
    if stopped:
        return STOP_CANCELLED
    if early_stopped:
        return STOP_NO_IMPROVEMENT
    return STOP_MAX_STEPS if budget.auto else STOP_EPOCHS


def stop_message(budget: Budget, reason: str, steps: int, best_step: int | None) -> str:
    """A sentence for the job: why training ended where it did."""
    if reason == STOP_NO_IMPROVEMENT:
        every = f", {budget.rounds_per_epoch} per pass over the data" if budget.rounds_per_epoch > 1 else ""
        return (
            f"validation mAP did not improve for {budget.patience} evaluations{every} (best at step "
            f"{best_step}); stopped after {steps} steps"
        )
    if reason == STOP_MAX_STEPS:
        return f"reached the step budget ({steps} steps; the base model's max_steps is {budget.max_steps})"
    if reason == STOP_EPOCHS:
        return f"trained the {budget.epochs} epochs asked for ({steps} steps)"
    return "stopped before the end (cancel or shutdown)"
