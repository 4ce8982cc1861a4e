"""Hyperparameter search with Optuna: the space a sweep searches, proposals and pruning decisions.

Torch-free, and free of any storage: a study is rebuilt in memory from the trials a
caller passes in (what the service keeps in its own rows), then asked for the next
configuration (`propose`) or for a pruning decision (`should_prune`). Keeping the trials
in the deployment's own tables, rather than in Optuna's RDBStorage, is deliberate:
RDBStorage keeps its schema version in a table named `alembic_version`, the very table
our own migrations use, so it cannot share the deployment's database; rebuilding the
study from rows costs a few milliseconds for the at most 64 trials of one candidate.

A space maps a name to a range (`{"low", "high", "log"}`), a list of choices, or one
fixed value. Hyperparameter names are JobSpec hyperparameters; `loss.<parameter>` names
are loss parameters, searched only for the losses they mean something for
(`LOSS_SEARCHABLE`: no focusing parameters for bce, Two-way's temperatures only for
twoway). Optuna is imported inside the functions, so that the API process, which validates
specs, stays light.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from apl.spec import ALL_LOSS_PARAMETERS, ROBUST_LOSS_PRESETS

#: Every parameter of the losses for under-tagged and long-tailed data.
ROBUST_PARAMETERS = frozenset(key for preset in ROBUST_LOSS_PRESETS.values() for key in preset)

if TYPE_CHECKING:
    import optuna

#: Hyperparameters a search may vary, and whether each takes integers.
HYPERPARAMETER_NAMES: dict[str, bool] = {
    "learning_rate": False,
    "epochs": True,
    "batch_size": True,
    "weight_decay": False,
    "warmup_fraction": False,
    "image_size": True,
    "max_length": True,
}
#: Loss parameters a search may vary (`loss.<field>` of LossSpec), and whether each takes integers.
_APL_NAMES = ("loss.gamma_neg", "loss.gamma_pos", "loss.clip", "loss.alpha1", "loss.alpha2")
LOSS_PARAMETER_NAMES: dict[str, bool] = {
    **dict.fromkeys(_APL_NAMES, False),
    **{f"loss.{key}": key == "change_epoch" for key in ALL_LOSS_PARAMETERS if key in ROBUST_PARAMETERS},
}
LOSS_NAMES = tuple(LOSS_PARAMETER_NAMES)
SPACE_NAMES = (*HYPERPARAMETER_NAMES, *LOSS_NAMES)
#: The names that take integers (a range of them must hold one; values are rounded to one).
INTEGER_NAMES = frozenset(
    name for name, whole in {**HYPERPARAMETER_NAMES, **LOSS_PARAMETER_NAMES}.items() if whole
)
#: The loss parameters that mean something for each preset (the others stay at the preset's value):
#: no focusing parameters for bce; each loss of `ROBUST_LOSS_PRESETS` searches its own parameters.
LOSS_SEARCHABLE: dict[str, tuple[str, ...]] = {
    "bce": (),
    "focal": ("loss.gamma_pos", "loss.gamma_neg"),
    "asl": ("loss.gamma_pos", "loss.gamma_neg", "loss.clip"),
    "apl": _APL_NAMES,
    **{name: tuple(f"loss.{key}" for key in preset) for name, preset in ROBUST_LOSS_PRESETS.items()},
}
MAX_TRIALS = 64
DEFAULT_TRIALS = 8
Sampler = Literal["tpe", "random"]
Pruner = Literal["median", "hyperband", "none"]
TrialState = Literal["running", "complete", "pruned", "failed"]
Value = float | int | str | bool


class Range(BaseModel):
    """A continuous (or integer, for integer hyperparameters) range; `log` samples it on a log scale."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _not_empty(self) -> Range:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"empty range: low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Choices(BaseModel):
    """A list of values to choose from."""

    model_config = ConfigDict(extra="forbid")

    choices: list[Value] = Field(min_length=1, max_length=64)


SpaceEntry = Range | Choices | Value


class SearchSpec(BaseModel):
    """A sweep's search: trials per candidate, the space, the sampler and the pruner."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "trials": 8,
                    "space": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}},
                    "sampler": "tpe",
                    "pruner": "median",
                }
            ]
        },
    )

    trials: int = Field(default=DEFAULT_TRIALS, ge=1, le=MAX_TRIALS, description="Trials per candidate.")
    space: dict[str, SpaceEntry] | None = Field(
        default=None,
        description="name -> {low, high, log} | {choices} | value. Default: the base model's space "
        "(GET /v1/base-models, `space`).",
    )
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"
    seeds_per_trial: int = Field(default=1, ge=1, le=1, description="Each trial trains on the first seed.")

    @field_validator("space")
    @classmethod
    def _known_names(cls, space: dict[str, SpaceEntry] | None) -> dict[str, SpaceEntry] | None:
        if space is None:
            return None
        for name, entry in space.items():
            if name not in SPACE_NAMES:
                raise ValueError(f"unknown name '{name}' in the space; known: {', '.join(SPACE_NAMES)}")
            if name in INTEGER_NAMES and isinstance(entry, Range) and _no_integer(entry):
                raise ValueError(f"'{name}' takes integers and [{entry.low:g}, {entry.high:g}] holds none")
        return space


def _no_integer(entry: Range) -> bool:
    return math.ceil(entry.low) > math.floor(entry.high)


def candidate_space(space: Mapping[str, SpaceEntry], loss_name: str) -> dict[str, SpaceEntry]:
    """The part of the space that means something for this loss (every hyperparameter, its own loss
    parameters)."""
    allowed = set(HYPERPARAMETER_NAMES) | set(LOSS_SEARCHABLE.get(loss_name, ()))
    return {name: entry for name, entry in space.items() if name in allowed}


def fixed_values(space: Mapping[str, SpaceEntry]) -> dict[str, Value]:
    """The names the space fixes to one value (applied to every trial, not searched)."""
    return {name: entry for name, entry in space.items() if not isinstance(entry, Range | Choices)}


def _distribution(name: str, entry: Range | Choices) -> optuna.distributions.BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(entry, Choices):
        return CategoricalDistribution(entry.choices)
    if name in INTEGER_NAMES:
        return IntDistribution(math.ceil(entry.low), math.floor(entry.high), log=entry.log)
    return FloatDistribution(entry.low, entry.high, log=entry.log)


def distributions(space: Mapping[str, SpaceEntry]) -> dict[str, optuna.distributions.BaseDistribution]:
    return {
        name: _distribution(name, entry)
        for name, entry in space.items()
        if isinstance(entry, Range | Choices)
    }


@dataclass
class TrialRecord:
    """One trial as the caller keeps it: its number, params, state and per-epoch values."""

    number: int
    params: dict[str, Value]
    state: TrialState
    values: list[float] = field(default_factory=list)
    system_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The trial's score: its best epoch when complete, else its last epoch (None without one)."""
        if not self.values:
            return None
        return max(self.values) if self.state == "complete" else self.values[-1]


def _seed(key: str, number: int) -> int:
    return zlib.crc32(f"{key}:{number}".encode()) & 0x7FFFFFFF


def _sampler(kind: Sampler, trials: int, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE's default of 10 random start-up trials would leave a small budget all random.
    startup = min(10, max(2, trials // 3))
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed, constant_liar=True)


def _pruner(kind: Pruner, trials: int, max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))
    # Prune after one finished trial when the budget is small (Optuna's default waits for 5), but not
    # in the first third of the epochs: on the digits search (docs/results.md) judging from epoch 1
    # pruned 9 of 12 trials, 7 of them after one epoch, and left bce a single complete trial.
    return optuna.pruners.MedianPruner(n_startup_trials=max(1, trials // 4), n_warmup_steps=max_epochs // 3)


_STATES = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING"}


def _frozen(record: TrialRecord, dists: Mapping[str, Any]) -> optuna.trial.FrozenTrial:
    from optuna.trial import TrialState as State
    from optuna.trial import create_trial

    params = {name: value for name, value in record.params.items() if name in dists}
    state = State[_STATES[record.state]]
    value = record.value if record.state == "complete" else None
    if state == State.COMPLETE and value is None:
        state = State.FAIL
    return create_trial(
        state=state,
        value=value,
        params=params,
        distributions={name: dists[name] for name in params},
        intermediate_values={epoch + 1: v for epoch, v in enumerate(record.values)},
        system_attrs=dict(record.system_attrs),
    )


def _study(
    history: Sequence[TrialRecord], dists: Mapping[str, Any], sampler: Any, pruner: Any
) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for record in sorted(history, key=lambda r: r.number):
        study.add_trial(_frozen(record, dists))
    return study


def propose(
    spec: SearchSpec, space: Mapping[str, SpaceEntry], history: Sequence[TrialRecord], seed_key: str
) -> dict[str, Value]:
    """The next trial's params: Optuna's ask on the study rebuilt from `history`, plus the fixed values.

    Seeded from `seed_key` and the trial's number, so one sweep's proposals are reproducible.
    """
    dists = distributions(space)
    number = len(history)
    study = _study(history, dists, _sampler(spec.sampler, spec.trials, _seed(seed_key, number)), None)
    trial = study.ask(dict(dists))
    return {**fixed_values(space), **trial.params}


def should_prune(
    spec: SearchSpec,
    space: Mapping[str, SpaceEntry],
    others: Sequence[TrialRecord],
    current: TrialRecord,
    max_epochs: int,
) -> tuple[bool, dict[str, Any]]:
    """Whether the pruner stops `current` after its last reported epoch; and its system attributes
    afterwards (Hyperband records the rungs a trial reached there), for the caller to keep."""
    dists = distributions(space)
    pruner = _pruner(spec.pruner, spec.trials, max_epochs)
    running = TrialRecord(current.number, current.params, "running", [], dict(current.system_attrs))
    ordered = sorted([*others, running], key=lambda r: r.number)  # the study numbers them by position
    study = _study(ordered, dists, None, pruner)
    trial_id = study.get_trials(deepcopy=False)[ordered.index(running)]._trial_id
    trial = _trial_handle(study, trial_id)
    for epoch, value in enumerate(current.values):
        trial.report(value, epoch + 1)
    decision = bool(current.values) and bool(trial.should_prune())
    attrs = study._storage.get_trial(trial_id).system_attrs
    return decision, dict(attrs)


def _trial_handle(study: optuna.Study, trial_id: int) -> optuna.Trial:
    import optuna

    return optuna.Trial(study, trial_id)


def importances(space: Mapping[str, SpaceEntry], history: Sequence[TrialRecord]) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA, seeded) over the complete trials; {} with fewer than two.

    A single searched parameter has importance 1 by definition.
    """
    import optuna

    dists = distributions(space)
    complete = [r for r in history if r.state == "complete" and r.value is not None]
    if len(dists) == 0 or len(complete) < 2:
        return {}
    renumbered = [TrialRecord(i, r.params, r.state, r.values) for i, r in enumerate(complete)]
    study = _study(renumbered, dists, None, None)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same params
        return {}
    return {name: float(value) for name, value in found.items()}
