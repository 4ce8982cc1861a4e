"""/v1/sweeps on SQLite (embedded broker) and PostgreSQL (Redis).

The children are real jobs queued through the jobs service; what a worker would do
(claim, finish with test metrics, store test predictions, register a model) is
written here straight to the database and the data dir, the way the worker writes it.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from apl.predictions import SplitPredictions
from core.db.models import Job, Sweep
from core.db.session import session_scope
from core.registry import ModelRecord, insert_model
from core.settings import Settings
from tests.api.conftest import Uploader, assert_problem, csv_bytes, zip_bytes
from tests.api.test_jobs import drain_broker, worker_sets

LABELS = ["sport", "summer", "travel", "winter"]
TEST_SAMPLES = 40


def post_sweep(client: TestClient, headers: dict[str, str], dataset_id: str, **spec: Any) -> Any:
    key = spec.pop("idempotency_key", None)
    extra = {"Idempotency-Key": key} if key else {}
    body = {"dataset_id": dataset_id, "base_model": "minilm-l6", **spec}
    return client.post("/v1/sweeps", json=body, headers=headers | extra)


def children(client: TestClient, headers: dict[str, str], sweep: dict[str, Any]) -> list[dict[str, Any]]:
    return [client.get(f"/v1/jobs/{job_id}", headers=headers).json() for job_id in sweep["job_ids"]]


def _predictions(quality: float, seed: int) -> SplitPredictions:
    """Test predictions whose quality (0: noise, 1: perfect ranking) is under the test's control."""
    rng = np.random.default_rng(seed)  # same targets for every candidate of one seed
    targets = (rng.random((TEST_SAMPLES, len(LABELS))) < 0.35).astype(np.uint8)
    noise = np.random.default_rng(int(quality * 1000) + 7 * seed).random(targets.shape)
    probs = np.clip(quality * targets + (1 - quality) * noise, 0, 1).astype(np.float32)
    return SplitPredictions(
        split="test",
        labels=LABELS,
        probs=probs,
        targets=targets,
        thresholds=np.full(len(LABELS), 0.5),
        indices=np.arange(TEST_SAMPLES) + 100 * seed,
        source="fraction",
        map=0.0,
        micro_f1=0.0,
        macro_f1=0.0,
    )


def finish_child(settings: Settings, job_id: str, quality: float, seed: int) -> None:
    """What the worker does for a succeeded child: predictions file, metrics, Model row, status."""
    from apl.metrics import f1_at_thresholds, mean_average_precision

    test = _predictions(quality, seed)
    test.save(settings.files.predictions(job_id, "test", 1))
    micro, macro = f1_at_thresholds(test.probs, test.targets, test.thresholds)
    metrics = {
        "map": 0.5,
        "test": {
            "map": mean_average_precision(test.probs, test.targets),
            "micro_f1": micro,
            "macro_f1": macro,
            "num_samples": TEST_SAMPLES,
        },
    }
    record = ModelRecord(
        id=f"model-{job_id[:8]}",
        base_model="minilm-l6",
        modality="text",
        labels=LABELS,
        thresholds=dict.fromkeys(LABELS, 0.5),
        metrics=metrics,
        artifact_path="artifacts/none.tar",
        sha256="0" * 64,
        size_bytes=1,
    )
    now = datetime.now(UTC)
    with session_scope(settings) as session:
        job = session.get_one(Job, job_id)
        job.status, job.attempts, job.best_metrics = "succeeded", 1, record.best_metrics()
        job.started_at, job.finished_at = now - timedelta(seconds=5), now
        insert_model(session, record, owner_id=job.owner_id, job_id=job_id)


def end_child(settings: Settings, job_id: str, status: str, code: str | None = None) -> None:
    worker_sets(
        settings, job_id, status=status, error_code=code, error_message=code, finished_at=datetime.now(UTC)
    )


@pytest.fixture
def dataset(upload: Uploader, alice: dict[str, str]) -> dict[str, Any]:
    rows = [
        (
            f"row {i} " + " ".join(LABELS[j] for j in range(4) if (i >> j) & 1),
            [LABELS[j] for j in range(4) if (i >> j) & 1],
        )
        for i in range(40)
    ]
    response = upload(alice, csv_bytes(rows), name="seasons-40")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_sweep_queues_one_ordinary_child_per_seed_and_candidate(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    response = post_sweep(client, alice, dataset["id"], hyperparameters={"epochs": 1, "max_length": 32})
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert response.headers["location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["status"] == "queued" and sweep["winner"] is None and sweep["finished_at"] is None
    assert [c["name"] for c in sweep["spec"]["candidates"]] == ["bce", "focal", "asl", "apl"]
    assert sweep["spec"]["seeds"] == [0, 1, 2] and sweep["spec"]["test_fraction"] == 0.2
    assert sweep["spec"]["metric"] == "map" and sweep["progress"]["total"] == len(sweep["job_ids"]) == 12
    jobs = children(client, alice, sweep)
    assert [(j["spec"]["hyperparameters"]["seed"], j["spec"]["loss"]["name"]) for j in jobs] == [
        (seed, name) for seed in (0, 1, 2) for name in ("bce", "focal", "asl", "apl")
    ]
    for job in jobs:
        assert job["sweep_id"] == sweep["id"] and job["status"] == "queued"
        assert job["spec"]["test_fraction"] == 0.2 and job["spec"]["test_dataset_id"] is None
        assert (
            job["spec"]["hyperparameters"]["epochs"] == 1
            and job["spec"]["hyperparameters"]["max_length"] == 32
        )
    assert jobs[3]["spec"]["loss"]["alpha2"] == 1.75  # presets filled in
    messages = drain_broker(settings, expect=12)
    assert sorted(m.payload[0][0] for m in messages) == sorted(sweep["job_ids"])
    listed = client.get("/v1/jobs", headers=alice, params={"sweep_id": sweep["id"]}).json()["items"]
    assert {j["id"] for j in listed} == set(sweep["job_ids"])
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json() == sweep
    assert [s["id"] for s in client.get("/v1/sweeps", headers=alice).json()["items"]] == [sweep["id"]]


@pytest.mark.parametrize(
    ("spec", "code", "loc"),
    [
        ({"candidates": [{"name": "nope"}]}, "validation_error", ["body", "candidates", 0, "name"]),
        (
            {"candidates": [{"name": "bce"}, {"name": "dbl", "tp": 2.0}]},
            "validation_error",
            ["body", "candidates", 1, "tp"],
        ),
        ({"candidates": []}, "empty_candidates", ["body", "candidates"]),
        (
            {"candidates": [{"name": "bce"}, {"name": "bce", "gamma_neg": 0.0}]},
            "duplicate_candidate",
            ["body", "candidates", 1],
        ),
        ({"seeds": list(range(17))}, "too_many_children", ["body", "candidates"]),
        ({"seeds": [0, 1, 0]}, "duplicate_seed", ["body", "seeds", 2]),
        ({"seeds": []}, "empty_seeds", ["body", "seeds"]),
        ({"test_fraction": 0.9}, "validation_error", ["body", "test_fraction"]),
        ({"test_fraction": 0}, "validation_error", ["body", "test_fraction"]),
        ({"test_fraction": None}, "missing_test_split", ["body", "test_fraction"]),
        ({"metric": "accuracy"}, "validation_error", ["body", "metric"]),
        ({"hyperparameters": {"seed": 3}}, "seed_in_hyperparameters", ["body", "hyperparameters", "seed"]),
        ({"base_model": "mobilenetv2-100"}, "modality_mismatch", ["body", "base_model"]),
        (
            {"test_dataset_id": "nope", "test_fraction": 0.2},
            "conflicting_test_split",
            ["body", "test_fraction"],
        ),
    ],
)
def test_invalid_sweeps_are_422_naming_the_field_and_create_nothing(
    client: TestClient,
    alice: dict[str, str],
    dataset: dict[str, Any],
    spec: dict[str, Any],
    code: str,
    loc: list[Any],
) -> None:
    body = assert_problem(post_sweep(client, alice, dataset["id"], **spec), 422, code)
    assert loc in [error["loc"] for error in body["errors"]], body
    assert client.get("/v1/sweeps", headers=alice).json()["items"] == []
    assert client.get("/v1/jobs", headers=alice).json()["items"] == []


def test_a_test_dataset_needs_the_same_labels_and_modality(
    client: TestClient, alice: dict[str, str], upload: Uploader, dataset: dict[str, Any]
) -> None:
    other_labels = upload(alice, csv_bytes([(f"t{i}", ["x" if i % 2 else "y"]) for i in range(10)])).json()
    images = upload(alice, zip_bytes(), filename="c.zip").json()
    same_rows = [(f"held out {i}", [LABELS[i % 4], LABELS[(i + 1) % 4]]) for i in range(12)]
    same = upload(alice, csv_bytes(same_rows)).json()
    loc = ["body", "test_dataset_id"]
    for test_id, code in [
        (other_labels["id"], "test_labels_mismatch"),
        (images["id"], "modality_mismatch"),
        (dataset["id"], "test_dataset_not_held_out"),
    ]:
        body = assert_problem(post_sweep(client, alice, dataset["id"], test_dataset_id=test_id), 422, code)
        assert loc in [error["loc"] for error in body["errors"]]
    assert_problem(
        post_sweep(client, alice, dataset["id"], test_dataset_id="missing"), 404, "dataset_not_found"
    )
    accepted = post_sweep(client, alice, dataset["id"], test_dataset_id=same["id"], seeds=[0])
    assert accepted.status_code == 202, accepted.text
    sweep = accepted.json()
    assert sweep["spec"]["test_fraction"] is None and sweep["spec"]["test_dataset_id"] == same["id"]
    job = children(client, alice, sweep)[0]
    assert (job["spec"]["test_fraction"], job["spec"]["test_dataset_id"]) == (None, same["id"])
    # A dataset that queued jobs score on cannot be deleted under them.
    assert_problem(client.delete(f"/v1/datasets/{same['id']}", headers=alice), 409, "dataset_in_use")


def test_ordinary_jobs_take_a_test_split_too(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any]
) -> None:
    job = client.post(
        "/v1/jobs",
        headers=alice,
        json={"dataset_id": dataset["id"], "base_model": "minilm-l6", "test_fraction": 0.25},
    )
    assert job.status_code == 202 and job.json()["spec"]["test_fraction"] == 0.25
    assert job.json()["sweep_id"] is None
    both = client.post(
        "/v1/jobs",
        headers=alice,
        json={
            "dataset_id": dataset["id"],
            "base_model": "minilm-l6",
            "test_fraction": 0.5,
            "test_dataset_id": "x",
        },
    )
    assert_problem(both, 422, "validation_error")


def test_idempotency_key_returns_the_same_sweep(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    spec = {"candidates": [{"name": "bce"}, {"name": "apl"}], "seeds": [0], "idempotency_key": "sweep-1"}
    first = post_sweep(client, alice, dataset["id"], **dict(spec))
    again = post_sweep(client, alice, dataset["id"], **dict(spec))
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    conflict = post_sweep(client, alice, dataset["id"], **(spec | {"seeds": [1]}))
    assert_problem(conflict, 409, "idempotency_key_reused")
    assert len(client.get("/v1/jobs", headers=alice).json()["items"]) == 2
    assert len(drain_broker(settings, expect=2)) == 2


def test_another_owner_gets_404_for_every_sweep_route(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], dataset: dict[str, Any]
) -> None:
    sweep = post_sweep(client, alice, dataset["id"], seeds=[0]).json()
    for method, path in [("GET", ""), ("GET", "/leaderboard"), ("POST", "/cancel")]:
        assert_problem(
            client.request(method, f"/v1/sweeps/{sweep['id']}{path}", headers=bob), 404, "not_found"
        )
    assert client.get("/v1/sweeps", headers=bob).json()["items"] == []
    assert_problem(post_sweep(client, bob, dataset["id"]), 404, "dataset_not_found")
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()["status"] == "queued"


def _two_by_two(client: TestClient, headers: dict[str, str], dataset_id: str) -> dict[str, Any]:
    response = post_sweep(
        client, headers, dataset_id, candidates=[{"name": "bce"}, {"name": "apl"}], seeds=[0, 1]
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def get_sweep(client: TestClient, headers: dict[str, str], sweep_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/sweeps/{sweep_id}", headers=headers).json()
    return body


def board(client: TestClient, headers: dict[str, str], sweep_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/sweeps/{sweep_id}/leaderboard", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_status_and_leaderboard_follow_the_children_to_a_winner(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    sweep = _two_by_two(client, alice, dataset["id"])
    bce0, apl0, bce1, apl1 = sweep["job_ids"]
    worker_sets(settings, bce0, status="running", attempts=1)
    assert get_sweep(client, alice, sweep["id"])["status"] == "running"
    finish_child(settings, bce0, 0.2, seed=0)
    finish_child(settings, apl0, 0.7, seed=0)
    partial = board(client, alice, sweep["id"])
    assert (partial["verdict"], partial["complete"], partial["winner"]) == ("incomplete", False, None)
    assert [r["candidate"]["name"] for r in partial["rows"]] == ["apl", "bce"]
    assert [r["n"] for r in partial["rows"]] == [1, 1] and partial["rows"][0]["ci95"] is None
    finish_child(settings, bce1, 0.25, seed=1)
    finish_child(settings, apl1, 0.75, seed=1)
    done = get_sweep(client, alice, sweep["id"])
    assert done["status"] == "succeeded" and done["progress"]["succeeded"] == 4
    assert done["finished_at"] is not None
    lb = board(client, alice, sweep["id"])
    assert (lb["split"], lb["metric"], lb["complete"], lb["verdict"]) == ("test", "map", True, "winner")
    best, other = lb["rows"]
    assert best["candidate"]["name"] == "apl" and best["n"] == 2 and best["mean"] > other["mean"]
    assert best["ci95"][0] <= best["mean"] <= best["ci95"][1] and best["sd"] >= 0
    assert [p["seed"] for p in best["per_seed"]] == [0, 1] and [p["job_id"] for p in best["per_seed"]] == [
        apl0,
        apl1,
    ]
    assert all(p["value"] == p["map"] for p in best["per_seed"])
    winner = lb["winner"]
    assert winner["candidate"]["name"] == "apl" and winner["versus"]["name"] == "bce"
    assert winner["delta_ci95"][0] > 0 and winner["delta"] > 0
    best_child = max(best["per_seed"], key=lambda p: p["value"])["job_id"]
    assert winner["job_id"] == best_child and winner["model_id"] == f"model-{best_child[:8]}"
    assert (
        "2000 resamples" in lb["method"]
        and "seed 0" in lb["method"]
        and "t interval" in lb["method"].replace("-", " ")
    )
    assert done["winner"] == {
        "candidate": best["candidate"],
        "model_id": winner["model_id"],
        "job_id": best_child,
    }
    # Cached once ended, the same on every read; a deleted model leaves the winner without model.
    with session_scope(settings) as session:
        assert session.scalar(select(Sweep.leaderboard).where(Sweep.id == sweep["id"])) is not None
    assert board(client, alice, sweep["id"]) == lb
    assert client.delete(f"/v1/models/{winner['model_id']}", headers=alice).status_code == 204
    assert board(client, alice, sweep["id"])["winner"]["model_id"] is None


def test_candidates_that_score_alike_have_no_clear_winner(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    sweep = _two_by_two(client, alice, dataset["id"])
    for job_id, seed in zip(sweep["job_ids"], [0, 0, 1, 1], strict=True):
        finish_child(settings, job_id, 0.5, seed=seed)  # identical predictions for both losses
    lb = board(client, alice, sweep["id"])
    assert lb["verdict"] == "no_clear_winner" and lb["winner"] is None
    assert lb["comparison"]["delta"] == 0.0 and lb["comparison"]["delta_ci95"] == [0.0, 0.0]
    assert get_sweep(client, alice, sweep["id"])["winner"] is None


def test_a_candidate_without_any_result_fails_the_sweep_and_is_named(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    sweep = _two_by_two(client, alice, dataset["id"])
    bce0, apl0, bce1, apl1 = sweep["job_ids"]
    finish_child(settings, bce0, 0.4, seed=0)
    end_child(settings, bce1, "failed", "out_of_memory")  # bce keeps one result
    end_child(settings, apl0, "failed", "training_diverged")
    assert get_sweep(client, alice, sweep["id"])["status"] == "running"
    end_child(settings, apl1, "failed", "training_diverged")
    failed = get_sweep(client, alice, sweep["id"])
    assert failed["status"] == "failed" and failed["winner"] is None
    assert failed["error"]["code"] == "candidate_without_result"
    assert (
        "apl (training_diverged x2)" in failed["error"]["message"] and "bce" not in failed["error"]["message"]
    )
    lb = board(client, alice, sweep["id"])
    assert lb["verdict"] == "incomplete" and lb["status"] == "failed" and lb["rows"][0]["n"] == 1


def test_one_failed_seed_leaves_the_sweep_succeeded(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    sweep = _two_by_two(client, alice, dataset["id"])
    bce0, apl0, bce1, apl1 = sweep["job_ids"]
    for job_id, seed in [(bce0, 0), (apl0, 0), (bce1, 1)]:
        finish_child(settings, job_id, 0.3 + 0.1 * seed, seed=seed)
    end_child(settings, apl1, "failed", "out_of_memory")
    assert get_sweep(client, alice, sweep["id"])["status"] == "succeeded"
    lb = board(client, alice, sweep["id"])
    assert lb["complete"] and lb["verdict"] in ("winner", "no_clear_winner")
    assert sorted(r["n"] for r in lb["rows"]) == [1, 2]


def test_cancel_stops_every_child_that_has_not_ended(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any], settings: Settings
) -> None:
    sweep = _two_by_two(client, alice, dataset["id"])
    bce0, apl0, bce1, apl1 = sweep["job_ids"]
    finish_child(settings, bce0, 0.4, seed=0)
    worker_sets(settings, apl0, status="running", attempts=1)
    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)
    assert response.status_code == 202, response.text
    cancelling = response.json()
    assert cancelling["status"] == "running" and cancelling["cancel_requested"] is True
    states = {j["id"]: (j["status"], j["cancel_requested"]) for j in children(client, alice, sweep)}
    assert states[bce0] == ("succeeded", False) and states[apl0] == ("running", True)
    assert states[bce1][0] == states[apl1][0] == "cancelled"
    end_child(settings, apl0, "cancelled")  # the worker stops within a step
    ended = get_sweep(client, alice, sweep["id"])
    assert ended["status"] == "cancelled" and ended["finished_at"] is not None and ended["winner"] is None
    assert board(client, alice, sweep["id"])["verdict"] == "incomplete"
    assert_problem(client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice), 409, "sweep_finished")


def test_sweeps_list_newest_first_in_pages(
    client: TestClient, alice: dict[str, str], dataset: dict[str, Any]
) -> None:
    ids = [post_sweep(client, alice, dataset["id"], seeds=[seed]).json()["id"] for seed in range(3)]
    first = client.get("/v1/sweeps", headers=alice, params={"limit": 2}).json()
    assert [s["id"] for s in first["items"]] == [ids[2], ids[1]] and first["next_cursor"]
    rest = client.get("/v1/sweeps", headers=alice, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [s["id"] for s in rest["items"]] == [ids[0]] and rest["next_cursor"] is None


def test_sweeps_are_found_by_an_id_prefix_of_their_owner_only(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], dataset: dict[str, Any]
) -> None:
    sweep = post_sweep(client, alice, dataset["id"], seeds=[0]).json()
    found = client.get("/v1/sweeps", headers=alice, params={"id_prefix": sweep["id"][:8]}).json()["items"]
    assert [s["id"] for s in found] == [sweep["id"]]
    assert client.get("/v1/sweeps", headers=bob, params={"id_prefix": sweep["id"][:8]}).json()["items"] == []
    assert_problem(client.get("/v1/sweeps?id_prefix=ZZ%25", headers=alice), 422, "validation_error")


def test_unreachable_broker_is_503_and_keeps_the_sweep_for_the_reconciler(
    settings: Settings, alice: dict[str, str], dataset: dict[str, Any]
) -> None:
    """As for a job: the sweep and its children stay saved (unsent), the 503 names the sweep."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broken = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
    with TestClient(create_app(broken)) as client:
        response = post_sweep(client, alice, dataset["id"], seeds=[0], idempotency_key="k")
        problem = assert_problem(response, 503, "broker_unavailable")
        assert response.headers["Location"] == f"/v1/sweeps/{problem['sweep_id']}"
        (kept,) = client.get("/v1/sweeps", headers=alice).json()["items"]
        assert kept["id"] == problem["sweep_id"] and kept["status"] == "queued"
        children = client.get("/v1/jobs", headers=alice).json()["items"]
        assert sorted(job["id"] for job in children) == sorted(problem["job_ids"]) == sorted(kept["job_ids"])
        assert all(job["status"] == "queued" and job["sweep_id"] == kept["id"] for job in children)
        replay = post_sweep(client, alice, dataset["id"], seeds=[0], idempotency_key="k")
        assert replay.status_code == 202 and replay.json()["id"] == kept["id"]
