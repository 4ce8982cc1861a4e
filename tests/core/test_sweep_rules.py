"""core.sweeps without a database: the children's specs, the state rules and the leaderboard verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from apl.catalog import resolve_base_model
from apl.predictions import SplitPredictions
from core.errors import AppError
from core.jobs.status import JobStatus
from core.sweeps import leaderboard
from core.sweeps.document import Leaderboard
from core.sweeps.spec import SweepSpec, candidate_label, check, child_specs
from core.sweeps.state import Child, children_of, sweep_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(**fields: Any) -> SweepSpec:
    return SweepSpec.model_validate({"dataset_id": "d", "base_model": "m", **fields})


def test_children_come_seed_by_seed_with_the_sweeps_split_and_only_the_given_hyperparameters() -> None:
    sweep = spec(candidates=[{"name": "bce"}, {"name": "asl", "gamma_neg": 2}], seeds=[7, 3],
                 hyperparameters={"epochs": 2}, test_fraction=0.3)  # fmt: skip
    children = list(child_specs(sweep))
    assert [(c.seed, c.candidate) for c in children] == [(7, 0), (7, 1), (3, 0), (3, 1)]
    for child in children:
        assert child.spec.test_fraction == 0.3 and child.spec.test_dataset_id is None
        assert child.spec.hyperparameters.seed == child.seed and child.spec.hyperparameters.epochs == 2
        assert child.spec.hyperparameters.model_fields_set == {"epochs", "seed"}  # the rest as for any job
    assert children[1].spec.loss.gamma_neg == 2.0 and children[1].spec.loss.clip == 0.05
    assert candidate_label(children[1].spec.loss) == "asl(gamma_neg=2)"
    assert [c.name for c in spec().candidates] == ["bce", "focal", "asl", "apl"] and spec().seeds == [0, 1, 2]


def test_a_test_dataset_replaces_the_default_fraction() -> None:
    assert spec(test_dataset_id="t").test_fraction is None
    assert spec().test_fraction == 0.2
    with pytest.raises(AppError) as both:
        check(spec(test_dataset_id="t", test_fraction=0.2))
    assert both.value.code == "conflicting_test_split"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"candidates": []}, "empty_candidates"),
        ({"seeds": []}, "empty_seeds"),
        ({"seeds": [1, 1]}, "duplicate_seed"),
        ({"candidates": [{"name": "apl"}, {"name": "apl", "alpha2": 1.75}]}, "duplicate_candidate"),
        (
            {"seeds": list(range(16)), "candidates": [{"name": n} for n in ("bce", "focal", "asl", "apl")]},
            None,
        ),
        ({"seeds": list(range(17))}, "too_many_children"),
        ({"hyperparameters": {"seed": 1}}, "seed_in_hyperparameters"),
        ({"test_fraction": None}, "missing_test_split"),
    ],
)
def test_checks(fields: dict[str, Any], code: str | None) -> None:
    if code is None:
        check(spec(**fields))  # 64 children exactly is allowed
        return
    with pytest.raises(AppError) as refused:
        check(spec(**fields))
    assert refused.value.status == 422 and refused.value.code == code
    assert refused.value.errors and refused.value.errors[0]["loc"][0] == "body"


@dataclass
class Row:
    """The job row fields `children_of` reads."""

    id: str
    spec: dict[str, Any]
    status: str
    finished_at: datetime | None = None
    model_id: str | None = None
    error_code: str | None = None
    best_metrics: dict[str, Any] | None = None
    attempts: int = 1


def rows(sweep: SweepSpec, statuses: list[str], test_maps: list[float] | None = None) -> list[Row]:
    out = []
    for i, child in enumerate(child_specs(sweep)):
        status = statuses[i]
        metrics = None
        if status == "succeeded":
            value = test_maps[i] if test_maps else 0.5
            metrics = {"map": 0.9, "test": {"map": value, "macro_f1": value / 2, "micro_f1": value / 3}}
        finished = T0 + timedelta(seconds=i) if status in ("succeeded", "failed", "cancelled") else None
        out.append(Row(f"job-{i}", child.spec.model_dump(mode="json"), status, finished, f"model-{i}",
                       "out_of_memory" if status == "failed" else None, metrics))  # fmt: skip
    return list(reversed(out))  # the database returns them in any order


TWO_BY_TWO = {"candidates": [{"name": "bce"}, {"name": "apl"}], "seeds": [0, 1]}


@pytest.mark.parametrize(
    ("statuses", "cancel", "expected"),
    [
        (["queued"] * 4, False, JobStatus.QUEUED),
        (["running", "queued", "queued", "queued"], False, JobStatus.RUNNING),
        (["succeeded", "queued", "queued", "queued"], False, JobStatus.RUNNING),
        (["succeeded", "running", "cancelled", "cancelled"], True, JobStatus.RUNNING),  # still stopping
        (["succeeded", "cancelled", "cancelled", "cancelled"], True, JobStatus.CANCELLED),
        (["succeeded", "failed", "failed", "succeeded"], False, JobStatus.SUCCEEDED),  # one result each
        (["succeeded", "failed", "succeeded", "failed"], False, JobStatus.FAILED),  # apl has none
        (["succeeded", "cancelled", "succeeded", "cancelled"], False, JobStatus.FAILED),
    ],
)
def test_the_sweep_status_follows_its_children(
    statuses: list[str], cancel: bool, expected: JobStatus
) -> None:
    sweep = spec(**TWO_BY_TWO)
    children = children_of(sweep, rows(sweep, statuses))
    assert [c.job_id for c in children] == ["job-0", "job-1", "job-2", "job-3"]  # the sweep's order
    state = sweep_state(sweep, children, cancel)
    assert state.status == expected and state.counts["total"] == 4
    assert (state.finished_at is not None) == expected.is_final
    if expected.is_final:
        assert state.finished_at == max(c.finished_at for c in children if c.finished_at)
    if expected == JobStatus.FAILED:
        assert state.error is not None and state.error["code"] == "candidate_without_result"
        assert (
            state.error["message"].startswith("no result for apl (") and "bce" not in state.error["message"]
        )
    else:
        assert state.error is None


def _predictions(quality: float, seed: int, n: int = 60) -> SplitPredictions:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    noise = np.random.default_rng(seed + int(quality * 100)).random(targets.shape)
    probs = np.clip(quality * targets + (1 - quality) * noise, 0, 1).astype(np.float32)
    thresholds = np.full(3, 0.5)
    return SplitPredictions(
        "test", ["a", "b", "c"], probs, targets, thresholds, np.arange(n), "fraction", 0, 0, 0
    )


def board(statuses: list[str], qualities: list[float], **fields: Any) -> dict[str, Any]:
    """A leaderboard whose per-seed values are the qualities and whose predictions have that quality."""
    sweep = spec(**(TWO_BY_TWO | fields))
    specs = list(child_specs(sweep))
    stored = {f"job-{i}": _predictions(qualities[i], child.seed) for i, child in enumerate(specs)}
    children = children_of(sweep, rows(sweep, statuses, qualities))
    status = sweep_state(sweep, children, False).status
    return leaderboard.build("s", sweep, children, status, stored.get, resamples=300)


def test_the_verdict_is_incomplete_while_children_run_and_rows_are_partial() -> None:
    partial = board(["succeeded", "succeeded", "running", "queued"], [0.2, 0.8, 0.2, 0.8])
    assert (partial["verdict"], partial["complete"], partial["winner"], partial["comparison"]) == (
        "incomplete", False, None, None)  # fmt: skip
    assert [r["n"] for r in partial["rows"]] == [1, 1] and partial["rows"][0]["ci95"] is None
    assert partial["rows"][0]["sd"] is None and "still running" in partial["method"]


def test_a_clearly_better_candidate_is_the_winner_and_its_best_child_the_model() -> None:
    result = board(["succeeded"] * 4, [0.1, 0.8, 0.15, 0.7])
    assert result["verdict"] == "winner" and result["complete"]
    assert [r["candidate"]["name"] for r in result["rows"]] == ["apl", "bce"]
    winner = result["winner"]
    assert winner["candidate"]["name"] == "apl" and winner["versus"]["name"] == "bce"
    assert winner["delta_ci95"][0] > 0 and winner["job_id"] == "job-1"  # seed 0's apl scored higher
    assert "300 resamples" in result["method"] and "RNG seed 0" in result["method"]


def test_identical_candidates_have_no_clear_winner() -> None:
    result = board(["succeeded"] * 4, [0.5, 0.5, 0.5, 0.5])
    assert result["verdict"] == "no_clear_winner" and result["winner"] is None
    assert result["comparison"]["delta_ci95"] == [0.0, 0.0]


def test_a_single_candidate_or_missing_predictions_give_no_verdict_but_say_why() -> None:
    alone = board(["succeeded", "succeeded"], [0.5, 0.5], candidates=[{"name": "apl"}], seeds=[0, 1])
    assert alone["verdict"] == "no_clear_winner" and "Only one candidate" in alone["method"]
    sweep = spec(**TWO_BY_TWO)
    children = children_of(sweep, rows(sweep, ["succeeded"] * 4))
    missing = leaderboard.build("s", sweep, children, JobStatus.SUCCEEDED, lambda _job: None, resamples=10)
    assert missing["verdict"] == "no_clear_winner" and "No seed has test predictions" in missing["method"]


def test_a_child_without_test_metrics_is_no_result() -> None:
    child = Child("j", 0, 0, JobStatus.SUCCEEDED, T0, "m", None, {"map": 0.5})
    assert not child.has_result


def test_a_sweep_and_its_children_take_the_base_models_defaults_unless_the_sweep_sets_them() -> None:
    defaults = resolve_base_model("mobilenetv2-100").defaults
    sweep = spec(base_model="mobilenetv2-100", hyperparameters={"epochs": 1}, seeds=[0])
    stored = sweep.model_dump(mode="json")["hyperparameters"]  # the stored sweep shows the values used
    assert (stored["learning_rate"], stored["image_size"], stored["epochs"]) == (
        defaults.learning_rate,
        defaults.image_size,
        1,
    )
    for child in child_specs(sweep):
        assert child.spec.hyperparameters.learning_rate == defaults.learning_rate
        assert child.spec.hyperparameters.image_size == defaults.image_size
        assert child.spec.hyperparameters.epochs == 1
    chosen = spec(base_model="mobilenetv2-100", hyperparameters={"learning_rate": 0.01}, seeds=[0])
    assert {c.spec.hyperparameters.learning_rate for c in child_specs(chosen)} == {0.01}
    stored_sweep = sweep.model_dump(mode="json")
    assert SweepSpec.model_validate(stored_sweep).model_dump(mode="json") == stored_sweep


def test_the_baselines_are_rows_of_their_own_one_per_seed_and_never_in_the_verdict() -> None:
    sweep = spec(**TWO_BY_TWO)
    qualities = [0.1, 0.8, 0.15, 0.7]
    raw = rows(sweep, ["succeeded"] * 4, qualities)
    for row in raw:  # every child of a seed fits the same baselines on the same split
        seed = row.spec["hyperparameters"]["seed"]
        probe = {"map": 0.6 + seed / 10, "macro_f1": 0.3, "micro_f1": 0.4}
        tfidf = {"map": 0.5, "macro_f1": 0.2, "micro_f1": 0.3}
        row.best_metrics["baselines"] = {"linear_probe": {"test": probe}, "tfidf": {"test": tfidf}}
    children = children_of(sweep, raw)
    specs = enumerate(child_specs(sweep))
    stored = {f"job-{i}": _predictions(qualities[i], child.seed) for i, child in specs}
    result = leaderboard.build("s", sweep, children, JobStatus.SUCCEEDED, stored.get, resamples=300)
    assert [r["candidate"]["name"] for r in result["rows"]] == ["apl", "bce"]  # the candidates only
    assert result["verdict"] == "winner" and result["winner"]["versus"]["name"] == "bce"
    probe, tfidf = result["baseline_rows"]
    assert (probe["baseline"], tfidf["baseline"]) == ("linear_probe", "tfidf")
    assert probe["label"].startswith("baseline: linear probe") and probe["n"] == 2
    assert [p["seed"] for p in probe["per_seed"]] == [0, 1] and probe["mean"] == pytest.approx(0.65)
    assert tfidf["mean"] == 0.5 and tfidf["sd"] == 0.0
    assert Leaderboard.model_validate(result).baseline_rows[0].baseline == "linear_probe"
