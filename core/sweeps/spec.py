"""The SweepSpec (what a client POSTs to /v1/sweeps), its checks, and the children's job specs.

Torch-free, like `apl.spec`. A sweep is one child job per (seed, candidate loss):
ordinary JobSpecs that differ only in `loss` and `hyperparameters.seed`, all with the
sweep's test split, so that for one seed every candidate sees the same
train/validation/test split and the same data order (`apl.data.split_test_indices`;
the loop seeds the shuffle from the seed alone).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from apl.catalog import default_space
from apl.search import INTEGER_NAMES, SearchSpec, Value, candidate_space
from apl.spec import (
    ALL_LOSS_PRESETS,
    LOSS_PRESETS,
    MAX_TEST_FRACTION,
    Hyperparameters,
    JobSpec,
    LossSpec,
    fill_model_defaults,
)
from core.errors import AppError

#: Most child jobs (candidates x seeds) one sweep may start.
MAX_CHILDREN = 64
#: Most search trials (candidates x trials) one sweep may run.
MAX_TRIALS = 256
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_TEST_FRACTION = 0.2
SweepMetric = Literal["map", "macro_f1", "micro_f1"]

Seed = int


class SweepHyperparameters(Hyperparameters):
    """The hyperparameters every child shares; each child's seed comes from the sweep's `seeds`."""

    seed: int | None = Field(  # type: ignore[assignment]
        default=None, exclude=True, description="Not accepted here: each child's seed comes from `seeds`."
    )


def _default_candidates() -> list[LossSpec]:
    return [LossSpec(name=name) for name in LOSS_PRESETS]  # type: ignore[arg-type]


class SweepSpec(BaseModel):
    """A loss tournament on one dataset and base model; every child shares the hyperparameters."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55",
                    "base_model": "minilm-l6",
                    "candidates": [{"name": "bce"}, {"name": "apl"}, {"name": "asl", "gamma_neg": 2.0}],
                    "seeds": [0, 1, 2],
                    "hyperparameters": {"epochs": 3},
                    "test_fraction": 0.2,
                    "metric": "map",
                }
            ]
        },
    )

    dataset_id: str = Field(min_length=1, max_length=64)
    base_model: str = Field(min_length=1, max_length=500)
    candidates: list[LossSpec] = Field(
        default_factory=_default_candidates,
        max_length=MAX_CHILDREN,
        description="The losses to compare: presets by name, with any parameter overrides. "
        "Left out: the four presets bce, focal, asl, apl plus what the dataset's profile calls for "
        "(long tail: dbl; unknown cells or under-tagging: hill, splc), the reason in `candidates_reason`.",
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: list(DEFAULT_SEEDS),
        max_length=MAX_CHILDREN,
        description="One child per candidate and seed; a seed fixes the split, the data order and the "
        "initialisation, the same for every candidate.",
    )
    hyperparameters: SweepHyperparameters = Field(
        default_factory=SweepHyperparameters, description="Shared by every child (seeds come from `seeds`)."
    )
    test_fraction: float | None = Field(
        default=DEFAULT_TEST_FRACTION,
        gt=0,
        le=MAX_TEST_FRACTION,
        description="Fraction of the dataset held out as the test split (per seed, before the "
        "train/validation split). Left out when test_dataset_id is given.",
    )
    test_dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Score every child on this dataset (same labels and modality) instead.",
    )
    metric: SweepMetric = Field(default="map", description="The test metric the leaderboard ranks by.")
    search: SearchSpec | None = Field(
        default=None,
        description="Tune each candidate first: `trials` jobs per candidate proposed by Optuna, scored on "
        "the validation split of the first seed; then each candidate's best configuration on every seed.",
    )

    @model_validator(mode="after")
    def _base_model_defaults(self) -> SweepSpec:
        """The stored sweep shows the values its children train with, as a job's spec does."""
        self.hyperparameters = fill_model_defaults(self.hyperparameters, self.base_model)
        if self.search is not None and self.search.space is None:
            space = default_space(self.base_model)
            if space is not None:
                self.search = SearchSpec.model_validate(self.search.model_dump() | {"space": space})
        return self

    @model_validator(mode="after")
    def _dataset_replaces_fraction(self) -> SweepSpec:
        if self.test_dataset_id is not None and "test_fraction" not in self.model_fields_set:
            self.test_fraction = None
        return self


def _unprocessable(code: str, loc: list[str | int], message: str) -> AppError:
    return AppError(422, code, message, errors=[{"loc": ["body", *loc], "msg": message}])


def candidate_key(loss: LossSpec | dict[str, Any]) -> str:
    """One string per distinct loss (presets filled in), to match children to candidates."""
    spec = loss if isinstance(loss, LossSpec) else LossSpec.model_validate(loss)
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)


def candidate_label(loss: LossSpec | dict[str, Any]) -> str:
    """A short name for people: the preset's name plus the parameters that differ from it."""
    spec = loss if isinstance(loss, LossSpec) else LossSpec.model_validate(loss)
    preset = ALL_LOSS_PRESETS[spec.name]
    changed = [f"{k}={v:g}" for k, v in spec.parameters().items() if v != preset[k]]
    if spec.name in LOSS_PRESETS and not spec.detach_focal_weight:
        changed.append("detach_focal_weight=false")
    return f"{spec.name}({', '.join(changed)})" if changed else spec.name


def check(spec: SweepSpec) -> None:
    """The checks pydantic cannot make field by field; each 422 names the field."""
    if not spec.candidates:
        raise _unprocessable("empty_candidates", ["candidates"], "give at least one candidate loss")
    if not spec.seeds:
        raise _unprocessable("empty_seeds", ["seeds"], "give at least one seed")
    seen: dict[str, int] = {}
    for index, candidate in enumerate(spec.candidates):
        key = candidate_key(candidate)
        if key in seen:
            label = candidate_label(candidate)
            message = f"candidate {index} is the same loss as candidate {seen[key]} ({label})"
            raise _unprocessable("duplicate_candidate", ["candidates", index], message)
        seen[key] = index
    for index, seed in enumerate(spec.seeds):
        if not 0 <= seed <= 2**32 - 1:
            raise _unprocessable("invalid_seed", ["seeds", index], "a seed is an integer from 0 to 2**32-1")
        if spec.seeds.index(seed) != index:
            raise _unprocessable("duplicate_seed", ["seeds", index], f"seed {seed} is listed twice")
    children = len(spec.candidates) * len(spec.seeds)
    if children > MAX_CHILDREN:
        message = (
            f"{len(spec.candidates)} candidates x {len(spec.seeds)} seeds = {children} jobs; "
            f"a sweep starts at most {MAX_CHILDREN}"
        )
        raise _unprocessable("too_many_children", ["candidates"], message)
    if spec.hyperparameters.seed is not None:
        message = "a sweep sets each child's seed from `seeds`; leave hyperparameters.seed out"
        raise _unprocessable("seed_in_hyperparameters", ["hyperparameters", "seed"], message)
    if spec.test_fraction is not None and spec.test_dataset_id is not None:
        message = "give test_fraction or test_dataset_id, not both"
        raise _unprocessable("conflicting_test_split", ["test_fraction"], message)
    if spec.test_fraction is None and spec.test_dataset_id is None:
        message = "a sweep needs a test split: give test_fraction or test_dataset_id"
        raise _unprocessable("missing_test_split", ["test_fraction"], message)
    if spec.search is not None:
        _check_search(spec)


def _check_search(spec: SweepSpec) -> None:
    """Every candidate's configurations must make valid job specs (a range end out of bounds is 422).

    A `loss.*` name is checked against the candidates whose loss has that parameter (Hill's
    `lamb` against the hill candidates); for the others it is left out of the search.
    """
    assert spec.search is not None
    if not spec.search.space:
        message = f"base model '{spec.base_model}' has no default space; give search.space"
        raise _unprocessable("empty_search_space", ["search", "space"], message)
    trials = len(spec.candidates) * spec.search.trials
    if trials > MAX_TRIALS:
        count = f"{len(spec.candidates)} candidates x {spec.search.trials} trials = {trials}"
        message = f"{count}; a sweep runs at most {MAX_TRIALS} trials"
        raise _unprocessable("too_many_trials", ["search", "trials"], message)
    for name, entry in spec.search.space.items():
        # A loss parameter is checked (and searched) only for the candidates whose loss has it.
        users = [c for c in spec.candidates if name in candidate_space({name: entry}, c.name)]
        ends: list[Value] = (
            [entry.low, entry.high] if hasattr(entry, "low") else list(getattr(entry, "choices", [entry]))  # type: ignore[arg-type]
        )
        for end in ends:
            for candidate in users:
                try:
                    configured(spec, candidate, {name: end}, seed=spec.seeds[0] if spec.seeds else 0)
                except ValidationError as error:
                    message = f"{name} = {end!r} is not a valid value: {error.errors()[0]['msg']}"
                    raise _unprocessable("invalid_search_space", ["search", "space", name], message) from None


@dataclass(frozen=True)
class ChildSpec:
    """One child job of a sweep: which candidate (index in `candidates`) and which seed."""

    candidate: int
    seed: int
    spec: JobSpec


def child_specs(spec: SweepSpec) -> Iterator[ChildSpec]:
    """The children in the order they are queued: seed by seed, every candidate per seed.

    So the first seed's results, one of every candidate, arrive first. Hyperparameters
    the client left out stay out of the child's spec, so each child fills them in
    exactly as an ordinary job would.
    """
    hyperparameters = spec.hyperparameters.model_dump(mode="json", exclude_unset=True)
    for seed in spec.seeds:
        for index, candidate in enumerate(spec.candidates):
            job = JobSpec.model_validate(
                {
                    "dataset_id": spec.dataset_id,
                    "base_model": spec.base_model,
                    "loss": candidate.model_dump(mode="json"),
                    "hyperparameters": {**hyperparameters, "seed": seed},
                    "test_fraction": spec.test_fraction,
                    "test_dataset_id": spec.test_dataset_id,
                }
            )
            yield ChildSpec(candidate=index, seed=seed, spec=job)


def _integer(value: Value) -> Value:
    return round(value) if isinstance(value, float) else value


def configured(spec: SweepSpec, candidate: LossSpec, config: dict[str, Value], *, seed: int) -> JobSpec:
    """The job spec of `candidate` trained with `config` (hyperparameters and `loss.*` values) on `seed`.

    Raises ValueError (pydantic's) when a value is out of its field's bounds.
    """
    hyperparameters = spec.hyperparameters.model_dump(mode="json", exclude_unset=True)
    loss = candidate.model_dump(mode="json")
    for name, value in config.items():
        whole = _integer(value) if name in INTEGER_NAMES else value
        if name.startswith("loss."):
            loss[name.removeprefix("loss.")] = whole
        else:
            hyperparameters[name] = whole
    return JobSpec.model_validate(
        {
            "dataset_id": spec.dataset_id,
            "base_model": spec.base_model,
            "loss": loss,
            "hyperparameters": {**hyperparameters, "seed": seed},
            "test_fraction": spec.test_fraction,
            "test_dataset_id": spec.test_dataset_id,
        }
    )


def search_space(spec: SweepSpec, candidate: int) -> dict[str, Any]:
    """The space searched for one candidate: the sweep's, less the loss parameters its loss ignores."""
    assert spec.search is not None
    return candidate_space(spec.search.space or {}, spec.candidates[candidate].name)


def replicate_specs(spec: SweepSpec, configs: dict[int, dict[str, Value]]) -> Iterator[ChildSpec]:
    """The replicate phase's children: each configured candidate's best configuration on every seed."""
    for seed in spec.seeds:
        for index, candidate in enumerate(spec.candidates):
            if index in configs:
                yield ChildSpec(
                    candidate=index, seed=seed, spec=configured(spec, candidate, configs[index], seed=seed)
                )
