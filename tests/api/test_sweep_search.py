"""Search inside a sweep (spec/API.md, "Search inside a sweep") on SQLite and PostgreSQL.

The trials are real jobs queued by `core.sweeps.search`; what a worker does with one
(claim, store a metric point per epoch, ask the pruner, end it, advance the sweep) is
done here through the very functions the worker calls (core.jobs.lifecycle,
core.sweeps.search), so the orchestration runs exactly as in production, minus the
training. The replicates are finished as in tests/api/test_sweeps.py.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.db.models import Job, SweepTrial
from core.db.session import session_scope
from core.jobs import lifecycle
from core.jobs.status import JobStatus
from core.settings import Settings
from core.sweeps import search
from tests.api.conftest import assert_problem
from tests.api.test_sweeps import dataset, finish_child, post_sweep  # noqa: F401 (the fixture)

LR = {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}


def search_sweep(client: TestClient, headers: dict[str, str], dataset_id: str, **search_spec: Any) -> Any:
    body = {"trials": 3, "space": LR, "pruner": "median"} | search_spec
    return post_sweep(
        client,
        headers,
        dataset_id,
        candidates=[{"name": "bce"}, {"name": "apl"}],
        seeds=[0, 1],
        hyperparameters={"epochs": 2, "max_length": 32},
        search=body,
    )


def point(epoch: int, value: float) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "step": epoch * 10,
        "train_loss": 0.5,
        "val_loss": 0.4,
        "map": value,
        "micro_f1": value,
        "macro_f1": value,
        "per_class_ap": {},
        "time_s": 1.0,
    }


def run_trial(settings: Settings, job_id: str, values: list[float]) -> str:
    """What the worker does with a trial: claim, one point and one pruner question per epoch, end,
    advance. Returns the state it ended in."""
    job = lifecycle.claim(job_id, settings)
    assert job is not None and job.role == "trial"
    state = "complete"
    for epoch, value in enumerate(values, start=1):
        assert lifecycle.add_metric_point(job_id, job.attempt, point(epoch, value), settings)
        if search.report(settings, job_id):
            state = "pruned"
            break
    outcome = search.outcome(settings, job_id, state)  # type: ignore[arg-type]
    assert lifecycle.finish_without_model(job_id, job.attempt, outcome, settings) == "succeeded"
    search.advance_for_job(settings, job_id)
    return state


def queued_trials(settings: Settings, sweep_id: str) -> list[str]:
    with session_scope(settings) as session:
        return list(
            session.scalars(
                select(Job.id)
                .where(Job.sweep_id == sweep_id, Job.role == "trial", Job.status == "queued")
                .order_by(Job.created_at)
            )
        )


def get(client: TestClient, headers: dict[str, str], path: str) -> Any:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("search_spec", "code", "loc"),
    [
        ({"space": {"nope": {"low": 0, "high": 1}}}, "validation_error", ["body", "search", "space"]),
        (
            {"space": {"learning_rate": {"low": 1e-3, "high": 1e-5, "log": True}}},
            "validation_error",
            ["body", "search", "space", "learning_rate"],
        ),
        ({"space": {"epochs": {"low": 1.2, "high": 1.8}}}, "validation_error", ["body", "search", "space"]),
        ({"space": {"learning_rate": {"low": 0, "high": 1, "log": True}}}, "validation_error", None),
        ({"space": {"batch_size": {"low": 0, "high": 8}}}, "invalid_search_space", None),
        ({"trials": 0}, "validation_error", ["body", "search", "trials"]),
        ({"trials": 65}, "validation_error", ["body", "search", "trials"]),
        ({"sampler": "grid"}, "validation_error", ["body", "search", "sampler"]),
        ({"pruner": "asha"}, "validation_error", ["body", "search", "pruner"]),
    ],
)
def test_a_bad_search_is_422_naming_the_field_and_creates_nothing(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
    search_spec: dict[str, Any],
    code: str,
    loc: list[str] | None,
) -> None:
    response = search_sweep(client, alice, dataset["id"], **search_spec)
    body = assert_problem(response, 422, code)
    where = body["errors"][0]["loc"]
    assert where[:3] == ["body", "search", "space"] or where[:2] == ["body", "search"], body
    if loc is not None:
        assert where[: len(loc)] == loc, body
    name = next(iter(search_spec.get("space", {})), None)
    if name is not None:
        assert name in str(body), body
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_the_default_space_is_the_base_models(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
) -> None:
    catalog = get(client, alice, "/v1/base-models")["items"]
    space = next(m["space"] for m in catalog if m["name"] == "minilm-l6")
    assert space["learning_rate"]["log"] is True and "loss.gamma_neg" in space
    response = post_sweep(client, alice, dataset["id"], candidates=[{"name": "bce"}], search={"trials": 2})
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert sweep["phase"] == "search", sweep
    assert sweep["spec"]["search"]["space"] == space
    trials = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")["items"]
    assert trials and all(set(t["params"]) == {"learning_rate"} for t in trials)  # bce: no focusing


def test_a_search_sweep_runs_its_trials_then_replicates_the_best_configurations(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    response = search_sweep(client, alice, dataset["id"])
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert sweep["phase"] == "search" and sweep["status"] == "queued"
    assert sweep["trials"] == {"total": 6, "done": 0, "pruned": 0, "failed": 0, "running": 4}
    first = queued_trials(settings, sweep["id"])
    assert len(first) == 4  # two candidates x sweep_trials_in_flight (2)
    for job_id in first:
        job = get(client, alice, f"/v1/jobs/{job_id}")
        assert job["role"] == "trial" and job["sweep_id"] == sweep["id"]
        assert job["spec"]["hyperparameters"]["seed"] == 0 and job["spec"]["test_fraction"] == 0.2
    # Trial values rise with the learning rate, so the best is the largest lr of each candidate.
    ran = 0
    while queued := queued_trials(settings, sweep["id"]):
        for job_id in queued:
            lr = get(client, alice, f"/v1/jobs/{job_id}")["spec"]["hyperparameters"]["learning_rate"]
            run_trial(settings, job_id, [0.3 + 10 * lr, 0.4 + 10 * lr])
            ran += 1
    assert ran == 6
    sweep = get(client, alice, f"/v1/sweeps/{sweep['id']}")
    assert sweep["phase"] == "replicate" and sweep["status"] == "running"
    assert sweep["trials"]["done"] == 6 and sweep["trials"]["running"] == 0
    listed = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")
    trials = listed["items"]
    for entry in listed["importances"]:  # Optuna's fANOVA: a lone parameter has all of it, given two trials
        complete = [t for t in trials if t["candidate"] == entry["candidate"] and t["state"] == "complete"]
        assert entry["importances"] == ({"learning_rate": 1.0} if len(complete) >= 2 else {})
    assert len(listed["importances"]) == 2
    page = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials?limit=4")
    assert len(page["items"]) == 4 and page["next_cursor"] == "4"
    rest = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials?limit=4&cursor=4")
    assert page["items"] + rest["items"] == trials and rest["next_cursor"] is None
    assert [(t["candidate"]["name"], t["number"]) for t in trials] == [
        (name, n) for name in ("bce", "apl") for n in range(3)
    ]
    for t in trials:
        assert 1e-5 <= t["params"]["learning_rate"] <= 1e-2 and t["job_id"] in sweep["job_ids"]
        assert t["state"] in ("complete", "pruned") and t["values"] and t["value"] is not None
    best = {
        name: max(
            (t for t in trials if t["candidate"]["name"] == name and t["state"] == "complete"),
            key=lambda t: t["value"],
        )
        for name in ("bce", "apl")
    }
    with session_scope(settings) as session:
        replicates = session.execute(
            select(Job.id, Job.spec).where(Job.sweep_id == sweep["id"], Job.role == "replicate")
        ).all()
    assert len(replicates) == 4  # two candidates x two seeds
    for job_id, spec in replicates:
        chosen = best[spec["loss"]["name"]]["params"]["learning_rate"]
        assert spec["hyperparameters"]["learning_rate"] == pytest.approx(chosen)
        seed = spec["hyperparameters"]["seed"]
        finish_child(settings, job_id, 0.9 if spec["loss"]["name"] == "apl" else 0.3, seed)
    sweep = get(client, alice, f"/v1/sweeps/{sweep['id']}")
    assert sweep["status"] == "succeeded", sweep
    board = get(client, alice, f"/v1/sweeps/{sweep['id']}/leaderboard")
    trial_jobs = {t["job_id"] for t in trials}
    assert board["split"] == "test" and [r["candidate"]["name"] for r in board["rows"]] == ["apl", "bce"]
    for row in board["rows"]:
        name = row["candidate"]["name"]
        assert row["config"] == best[name]["params"] and row["search_value"] == pytest.approx(
            best[name]["value"]
        )
        assert row["n"] == 2 and not {p["job_id"] for p in row["per_seed"]} & trial_jobs


def test_the_pruner_stops_a_losing_trial_which_stays_a_visible_outcome(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    sweep = search_sweep(client, alice, dataset["id"], trials=3).json()
    bce_first = queued_trials(settings, sweep["id"])[0]  # candidates take turns: bce 0, apl 0, bce 1, ...
    assert run_trial(settings, bce_first, [0.8, 0.9]) == "complete"
    states = []
    while queued := queued_trials(settings, sweep["id"]):
        for job_id in queued:
            states.append(run_trial(settings, job_id, [0.1, 0.95]))
    assert "pruned" in states
    trials = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")["items"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and all(t["values"] == [0.1] and t["value"] == 0.1 for t in pruned)
    for t in pruned:
        job = get(client, alice, f"/v1/jobs/{t['job_id']}")
        assert job["status"] == "succeeded" and job["model_id"] is None and job["error"] is None
    sweep = get(client, alice, f"/v1/sweeps/{sweep['id']}")
    assert sweep["trials"]["pruned"] == len(pruned) and sweep["phase"] == "replicate"


def test_advances_racing_from_many_workers_queue_each_trial_once(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    sweep = search_sweep(client, alice, dataset["id"], trials=4).json()
    for job_id in queued_trials(settings, sweep["id"]):
        job = lifecycle.claim(job_id, settings)
        assert job is not None
        lifecycle.add_metric_point(job_id, job.attempt, point(1, 0.5), settings)
        lifecycle.finish_without_model(
            job_id, job.attempt, search.outcome(settings, job_id, "complete"), settings
        )
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def advance() -> None:
        try:
            barrier.wait()
            search.advance(settings, sweep["id"], send=False)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=advance) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    with session_scope(settings) as session:
        numbers = session.execute(select(SweepTrial.candidate, SweepTrial.number)).all()
    assert sorted(numbers) == [(c, n) for c in (0, 1) for n in range(4)]


def test_cancel_stops_the_search_and_no_trial_follows(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    sweep = search_sweep(client, alice, dataset["id"]).json()
    running = queued_trials(settings, sweep["id"])[0]
    job = lifecycle.claim(running, settings)
    assert job is not None
    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)
    assert response.status_code == 202, response.text
    assert get(client, alice, f"/v1/jobs/{running}")["cancel_requested"] is True
    assert lifecycle.finish_without_model(
        running, job.attempt, {"trial": {"state": "complete"}}, settings
    ) == ("cancelled")
    assert search.advance(settings, sweep["id"]) == []
    sweep = get(client, alice, f"/v1/sweeps/{sweep['id']}")
    assert sweep["status"] == "cancelled" and sweep["trials"]["failed"] == 4
    assert all(
        t["state"] == "failed" for t in get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")["items"]
    )


def test_failed_trials_leave_a_candidate_without_configuration_and_the_sweep_names_it(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    sweep = search_sweep(client, alice, dataset["id"], trials=1).json()
    bce, apl = queued_trials(settings, sweep["id"])
    job = lifecycle.claim(bce, settings)
    assert job is not None
    lifecycle.finish(bce, job.attempt, JobStatus.FAILED, settings, "training_diverged", "nan loss")
    search.advance_for_job(settings, bce)
    run_trial(settings, apl, [0.5])
    sweep = get(client, alice, f"/v1/sweeps/{sweep['id']}")
    assert sweep["phase"] == "replicate" and sweep["trials"]["failed"] == 1
    with session_scope(settings) as session:
        replicates = session.execute(
            select(Job.id, Job.spec).where(Job.sweep_id == sweep["id"], Job.role == "replicate")
        ).all()
    assert {spec["loss"]["name"] for _, spec in replicates} == {"apl"}
    for job_id, spec in replicates:
        finish_child(settings, job_id, 0.8, spec["hyperparameters"]["seed"])
    sweep = get(client, alice, f"/v1/sweeps/{sweep['id']}")
    assert sweep["status"] == "failed" and "bce" in sweep["error"]["message"]


def test_a_sweep_without_search_has_no_phase_and_replicate_children(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
) -> None:
    sweep = post_sweep(client, alice, dataset["id"], candidates=[{"name": "bce"}], seeds=[0]).json()
    assert sweep["phase"] is None and sweep["trials"] is None
    assert get(client, alice, f"/v1/jobs/{sweep['job_ids'][0]}")["role"] == "replicate"
    listed = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")
    assert listed == {"items": [], "next_cursor": None, "importances": []}


NEW_LOSSES = [{"name": "apl"}, {"name": "hill"}, {"name": "splc"}, {"name": "dbl"}, {"name": "twoway"}]


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("loss.tp", {"low": 0.0, "high": 2.0}),  # a temperature must be > 0
        ("loss.tau", {"low": 0.5, "high": 1.5}),  # a probability
        ("loss.neg_scale", {"choices": [0.0, 2.0]}),
        ("loss.change_epoch", {"choices": [0, 2]}),  # epochs count from 1
    ],
)
def test_a_new_loss_parameter_out_of_bounds_is_422_naming_it(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
    name: str,
    entry: dict[str, Any],
) -> None:
    search_spec = {"trials": 2, "space": {**LR, name: entry}}
    response = post_sweep(client, alice, dataset["id"], candidates=NEW_LOSSES, seeds=[0], search=search_spec)
    body = assert_problem(response, 422, "invalid_search_space")
    assert body["errors"][0]["loc"] == ["body", "search", "space", name] and name in body["detail"], body
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_each_new_loss_searches_its_own_parameters_and_its_trials_train_with_them(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    space = {
        **LR,
        "loss.gamma_neg": {"low": 0.0, "high": 6.0},
        "loss.lamb": {"low": 1.0, "high": 2.0},
        "loss.margin": {"low": 0.0, "high": 1.5},
        "loss.change_epoch": {"low": 1, "high": 3},
        "loss.neg_scale": {"low": 1.0, "high": 5.0, "log": True},
        "loss.tp": {"low": 1.0, "high": 8.0, "log": True},
        "loss.tn": {"low": 0.5, "high": 2.0},
    }
    response = post_sweep(
        client,
        alice,
        dataset["id"],
        candidates=NEW_LOSSES,
        seeds=[0],
        hyperparameters={"epochs": 2, "max_length": 32},
        search={"trials": 2, "space": space},
    )
    assert response.status_code == 202, response.text
    sweep = response.json()
    own = {
        "apl": {"loss.gamma_neg"},
        "hill": {"loss.lamb", "loss.margin"},
        "splc": {"loss.margin", "loss.change_epoch"},
        "dbl": {"loss.neg_scale"},
        "twoway": {"loss.tp", "loss.tn"},
    }
    trials = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")["items"]
    assert {t["candidate"]["name"] for t in trials} == set(own)
    for trial in trials:
        loss_name = trial["candidate"]["name"]
        assert set(trial["params"]) == {"learning_rate"} | own[loss_name], trial
        job_loss = get(client, alice, f"/v1/jobs/{trial['job_id']}")["spec"]["loss"]
        assert job_loss["name"] == loss_name
        for param, value in trial["params"].items():
            if param.startswith("loss."):
                assert job_loss[param.removeprefix("loss.")] == value, (job_loss, trial["params"])
        if loss_name == "splc":
            assert isinstance(trial["params"]["loss.change_epoch"], int)


def test_a_search_on_step_budgets_shows_its_trials_and_prunes_them(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],  # noqa: F811
    settings: Settings,
) -> None:
    """Trials that leave `epochs` out train on the base model's step budget: their progress reads
    0 epochs until training starts, and the pruner judges them by their evaluations, past a warm-up
    of a third of `search.STEP_BUDGET_EVALUATIONS`."""
    sweep = post_sweep(
        client,
        alice,
        dataset["id"],
        candidates=[{"name": "bce"}],
        seeds=[0],
        hyperparameters={"max_length": 32},
        search={"trials": 4, "space": LR, "pruner": "median"},
    ).json()
    first = queued_trials(settings, sweep["id"])[0]
    assert get(client, alice, f"/v1/jobs/{first}")["progress"]["epochs"] == 0
    assert run_trial(settings, first, [0.8, 0.85, 0.9, 0.9]) == "complete"
    states = []
    while queued := queued_trials(settings, sweep["id"]):
        for job_id in queued:
            states.append(run_trial(settings, job_id, [0.1, 0.1, 0.1, 0.1]))
    assert "pruned" in states
    trials = get(client, alice, f"/v1/sweeps/{sweep['id']}/trials")["items"]
    warm_up = search.STEP_BUDGET_EVALUATIONS // 3
    # judged from the warm-up's last evaluation on, so stopped before its fourth
    assert all(warm_up <= len(t["values"]) < 4 for t in trials if t["state"] == "pruned")
