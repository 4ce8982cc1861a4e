"""/v1/jobs and /v1/base-models on SQLite (embedded broker) and PostgreSQL (Redis).

Worker-side changes (claim, metric points, finish) are written straight to the
database here, the way the worker writes them, to drive cancel, metrics and events.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kombu import Connection
from sqlalchemy import select, update

from api.main import create_app
from apl.catalog import FAMILY_DEFAULTS, resolve_base_model
from apl.spec import Hyperparameters
from core.broker import RUN_JOB_TASK
from core.db.models import Job, MetricPoint
from core.db.session import session_scope
from core.jobs import lifecycle
from core.settings import Settings
from tests.api.conftest import JobPoster, Uploader, assert_problem, zip_bytes
from tests.worker.harness import job_row

#: How long the fake worker of the events test waits for the stream to show its last change.
STEP_TIMEOUT_S = 30.0


def drain_broker(settings: Settings, expect: int, timeout: float = 5.0) -> list[Any]:
    """Consume messages from the job queue with a real kombu consumer until `expect` arrived."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    with Connection(settings.resolved_broker_url) as connection:
        queue = connection.SimpleQueue(settings.queue_name)
        try:
            while len(received) < expect and time.monotonic() < deadline:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                received.append(message)
                message.ack()
            try:  # nothing more than expected
                extra = queue.get(timeout=0.3)
                received.append(extra)
                extra.ack()
            except queue.Empty:
                pass
        finally:
            queue.close()
    return received


def worker_sets(settings: Settings, job_id: str, **values: Any) -> None:
    with session_scope(settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def add_point(settings: Settings, job_id: str, epoch: int, step: int, map_: float) -> None:
    with session_scope(settings) as session:
        session.add(
            MetricPoint(
                job_id=job_id,
                epoch=epoch,
                step=step,
                train_loss=0.5 / (epoch + 1),
                val_loss=0.6 / (epoch + 1),
                map=map_,
                micro_f1=0.5,
                macro_f1=0.4,
                per_class_ap={"summer": map_, "winter": None},
                time_s=1.5 * (epoch + 1),
            )
        )


def worker_evaluates(settings: Settings, job_id: str, epoch: int, step: int, map_: float) -> None:
    """What the worker does per evaluation: the metric point and its epoch event, fenced by attempt 0."""
    point = {
        "epoch": epoch,
        "step": step,
        "train_loss": 0.5 / (epoch + 1),
        "val_loss": 0.6 / (epoch + 1),
        "map": map_,
        "micro_f1": 0.5,
        "macro_f1": 0.4,
        "per_class_ap": {"summer": map_, "winter": None},
        "time_s": 1.5 * (epoch + 1),
    }
    assert lifecycle.add_metric_point(job_id, 0, point, settings, epochs=3, samples_per_s=10.0)


def test_create_fills_defaults_and_the_id_lands_on_the_broker(
    client: TestClient,
    alice: dict[str, str],
    text_dataset: dict[str, Any],
    settings: Settings,
    post_job: JobPoster,
) -> None:
    response = post_job(alice, text_dataset["id"], loss={"name": "asl", "gamma_neg": 2.0})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["queue_position"] == 0
    assert job["spec"]["loss"] == {
        "name": "asl",
        "alpha1": 1.0,
        "alpha2": 0.5,
        "beta": 1.0,
        "gamma_pos": 1.0,
        "gamma_neg": 2.0,
        "clip": 0.05,
        "detach_focal_weight": True,
    }
    # Left out: a step budget stopped by evidence (apl.training.budget); the run says how many epochs.
    epochs = 0
    assert job["spec"]["hyperparameters"]["epochs"] is None
    assert job["spec"]["hyperparameters"]["early_stopping_patience"] is None
    assert job["spec"]["decision"] == {"policy": "max_f1", "target": None, "min_labels": 0}
    assert job["spec"]["calibration"] == "auto"
    assert job["progress"] == {"epoch": 0, "epochs": epochs, "step": 0, "steps": 0}
    assert job["started_at"] is None and job["finished_at"] is None
    assert (job["best_metrics"], job["model_id"], job["error"]) == (None, None, None)
    second = post_job(alice, text_dataset["id"], hyperparameters={"epochs": 1}).json()
    assert second["queue_position"] == 1
    assert second["progress"]["epochs"] == 1

    messages = drain_broker(settings, expect=2)
    assert [m.headers["task"] for m in messages] == [RUN_JOB_TASK, RUN_JOB_TASK]
    assert [m.payload[0] for m in messages] == [[job["id"]], [second["id"]]]  # only the id travels
    assert messages[0].content_type == "application/json"
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json() == job


def test_idempotency_key_returns_the_same_job(
    client: TestClient,
    alice: dict[str, str],
    bob: dict[str, str],
    upload: Uploader,
    text_dataset: dict[str, Any],
    settings: Settings,
    post_job: JobPoster,
) -> None:
    first = post_job(alice, text_dataset["id"], idempotency_key="retry-1")
    again = post_job(alice, text_dataset["id"], idempotency_key="retry-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    conflict = post_job(alice, text_dataset["id"], idempotency_key="retry-1", loss={"name": "bce"})
    assert_problem(conflict, 409, "idempotency_key_reused")
    bobs_dataset = upload(bob).json()["id"]
    bobs = post_job(bob, bobs_dataset, idempotency_key="retry-1")  # keys are per owner
    assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]
    assert len(drain_broker(settings, expect=2)) == 2
    assert len(client.get("/v1/jobs", headers=alice).json()["items"]) == 1


@pytest.mark.parametrize(
    ("spec", "code", "loc"),
    [
        ({"unexpected": 1}, "validation_error", ["body", "unexpected"]),
        ({"loss": {"name": "apl", "clip": 1.5}}, "validation_error", ["body", "loss", "clip"]),
        ({"loss": {"name": "hinge"}}, "validation_error", ["body", "loss", "name"]),
        ({"loss": {"name": "hill", "clip": 0.1}}, "validation_error", ["body", "loss", "clip"]),
        ({"loss": {"name": "splc", "tau": 1.5}}, "validation_error", ["body", "loss", "tau"]),
        (
            {"loss": {"name": "splc", "change_epoch": 1.5}},
            "validation_error",
            ["body", "loss", "change_epoch"],
        ),
        ({"loss": {"name": "dbl", "neg_scale": 0}}, "validation_error", ["body", "loss", "neg_scale"]),
        ({"loss": {"name": "twoway", "gamma": 2}}, "validation_error", ["body", "loss", "gamma"]),
        ({"hyperparameters": {"epochs": 0}}, "validation_error", ["body", "hyperparameters", "epochs"]),
        (
            {"hyperparameters": {"learning_rate": "fast"}},
            "validation_error",
            ["body", "hyperparameters", "learning_rate"],
        ),
        ({"base_model": "gpt-17"}, "unknown_base_model", ["body", "base_model"]),
        ({"base_model": "timm:Bad Name!"}, "unknown_base_model", ["body", "base_model"]),
        ({"base_model": "mobilenetv2-100"}, "modality_mismatch", ["body", "base_model"]),
        ({"base_model": "timm:resnet18"}, "modality_mismatch", ["body", "base_model"]),
        ({"decision": {"policy": "precision_at"}}, "validation_error", ["body", "decision"]),
        ({"decision": {"policy": "max_f1", "target": 0.9}}, "validation_error", ["body", "decision"]),
        ({"decision": {"policy": "recall_at", "target": 0.0}}, "validation_error", ["body", "decision"]),
        (
            {"decision": {"policy": "fixed", "target": 1.5}},
            "validation_error",
            ["body", "decision", "target"],
        ),
        ({"decision": {"policy": "top3"}}, "validation_error", ["body", "decision", "policy"]),
        ({"decision": {"min_labels": -1}}, "validation_error", ["body", "decision", "min_labels"]),
        ({"calibration": "sigmoid"}, "validation_error", ["body", "calibration"]),
        # A hub id on a deployment without model downloads (the default) is refused up front.
        ({"base_model": "hf:someone/some-encoder"}, "unknown_base_model", ["body", "base_model"]),
        # So is a timm architecture the installed timm does not have, and a path that is no model.
        ({"base_model": "timm:resnet999"}, "unknown_base_model", ["body", "base_model"]),
        ({"base_model": "hf:/no/such/dir"}, "unknown_base_model", ["body", "base_model"]),
    ],
)
def test_invalid_specs_are_422_with_errors(
    alice: dict[str, str],
    text_dataset: dict[str, Any],
    post_job: JobPoster,
    client: TestClient,
    spec: dict[str, Any],
    code: str,
    loc: list[str],
) -> None:
    body = assert_problem(post_job(alice, text_dataset["id"], **spec), 422, code)
    assert loc in [error["loc"] for error in body["errors"]], body
    assert all(isinstance(error["msg"], str) and error["msg"] for error in body["errors"])
    assert client.get("/v1/jobs", headers=alice).json()["items"] == []


def test_image_models_need_an_image_dataset(
    upload: Uploader, alice: dict[str, str], post_job: JobPoster
) -> None:
    images = upload(alice, zip_bytes(), filename="colours.zip").json()
    accepted = post_job(alice, images["id"], base_model="mobilenetv2-100", hyperparameters={"image_size": 32})
    assert accepted.status_code == 202, accepted.text
    assert_problem(post_job(alice, images["id"], base_model="minilm-l6"), 422, "modality_mismatch")


def test_missing_or_foreign_dataset_is_404(
    upload: Uploader, alice: dict[str, str], bob: dict[str, str], post_job: JobPoster
) -> None:
    assert_problem(post_job(alice, "no-such-dataset"), 404, "dataset_not_found")
    bobs = upload(bob).json()["id"]
    assert_problem(post_job(alice, bobs), 404, "dataset_not_found")


def test_list_filters_by_status_and_pages(
    client: TestClient, alice: dict[str, str], text_dataset: dict[str, Any], post_job: JobPoster
) -> None:
    ids = [post_job(alice, text_dataset["id"]).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[1]}/cancel", headers=alice)
    queued = client.get("/v1/jobs", headers=alice, params={"status": "queued"}).json()
    assert [job["id"] for job in queued["items"]] == [ids[2], ids[0]]
    assert [job["queue_position"] for job in queued["items"]] == [1, 0]
    cancelled = client.get("/v1/jobs?status=cancelled", headers=alice).json()["items"]
    assert [job["id"] for job in cancelled] == [ids[1]] and cancelled[0]["queue_position"] is None
    seen, cursor = [], None
    for _ in range(10):  # bounded: 3 pages are expected
        page = client.get(
            "/v1/jobs", headers=alice, params={"limit": 1} | ({"cursor": cursor} if cursor else {})
        )
        seen += [job["id"] for job in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    else:
        pytest.fail(f"paging did not end after 10 pages: {seen}")
    assert seen == ids[::-1]
    body = assert_problem(client.get("/v1/jobs?status=paused", headers=alice), 422, "validation_error")
    assert body["errors"][0]["loc"] == ["query", "status"]


def test_cancel_a_queued_job_ends_it_at_once(
    client: TestClient, alice: dict[str, str], text_dataset: dict[str, Any], post_job: JobPoster
) -> None:
    job = post_job(alice, text_dataset["id"]).json()
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert response.status_code == 202
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"] is True
    assert datetime.fromisoformat(cancelled["finished_at"]) >= datetime.fromisoformat(cancelled["created_at"])
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice), 409, "job_finished")


def test_cancel_a_running_job_flags_it_for_the_worker(
    client: TestClient,
    alice: dict[str, str],
    text_dataset: dict[str, Any],
    settings: Settings,
    post_job: JobPoster,
) -> None:
    job = post_job(alice, text_dataset["id"]).json()
    worker_sets(settings, job["id"], status="running", started_at=datetime.now(UTC), attempts=1)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    with session_scope(settings) as session:
        assert session.scalar(select(Job.cancel_requested).where(Job.id == job["id"])) is True
    worker_sets(settings, job["id"], status="succeeded", finished_at=datetime.now(UTC))
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice), 409, "job_finished")


def test_failed_job_shows_its_error(
    client: TestClient,
    alice: dict[str, str],
    text_dataset: dict[str, Any],
    settings: Settings,
    post_job: JobPoster,
) -> None:
    job = post_job(alice, text_dataset["id"]).json()
    worker_sets(
        settings,
        job["id"],
        status="failed",
        error_code="out_of_memory",
        error_message="the batch did not fit in memory; lower batch_size",
        finished_at=datetime.now(UTC),
    )
    failed = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert failed["error"] == {
        "code": "out_of_memory",
        "message": "the batch did not fit in memory; lower batch_size",
    }


def test_metrics_series_is_ordered_by_epoch(
    client: TestClient,
    alice: dict[str, str],
    text_dataset: dict[str, Any],
    settings: Settings,
    post_job: JobPoster,
) -> None:
    job = post_job(alice, text_dataset["id"]).json()
    assert client.get(f"/v1/jobs/{job['id']}/metrics", headers=alice).json() == {
        "job_id": job["id"],
        "series": [],
    }
    for epoch in (2, 0, 1):
        add_point(settings, job["id"], epoch, step=10 * (epoch + 1), map_=0.5 + epoch / 10)
    body = client.get(f"/v1/jobs/{job['id']}/metrics", headers=alice).json()
    assert body["job_id"] == job["id"]
    assert [point["epoch"] for point in body["series"]] == [0, 1, 2]
    assert body["series"][1] == {
        "epoch": 1,
        "step": 20,
        "train_loss": 0.25,
        "val_loss": 0.3,
        "map": 0.6,
        "micro_f1": 0.5,
        "macro_f1": 0.4,
        "per_class_ap": {"summer": 0.6, "winter": None},
        "time_s": 3.0,
    }


def _parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def _follow(response: Any, shown: dict[str, threading.Event]) -> str:
    """The stream's text, read as it comes; sets `shown[status]` / `shown["progress"]` per event."""
    raw, block = "", []
    for line in response.iter_lines():
        raw += line + "\n"
        if line:
            block.append(line)
            continue
        for kind, data in _parse_sse("\n".join(block)):
            step = data["status"] if kind == "status" else kind
            if step in shown:
                shown[step].set()
        block = []
    return raw


def test_events_stream_status_changes_and_metric_points_until_the_end(
    settings: Settings, alice: dict[str, str], text_dataset: dict[str, Any]
) -> None:
    fast = settings.model_copy(update={"events_poll_seconds": 0.05})
    with TestClient(create_app(fast)) as client:
        job = client.post(
            "/v1/jobs", json={"dataset_id": text_dataset["id"], "base_model": "minilm-l6"}, headers=alice
        ).json()
        # The fake worker makes each change once the stream has shown the one before it, so
        # no poll can fold two changes into one event, however slow the machine is.
        shown = {step: threading.Event() for step in ("queued", "running", "progress")}
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                assert shown["queued"].wait(STEP_TIMEOUT_S), "the stream never showed the queued job"
                worker_sets(settings, job["id"], status="running", started_at=datetime.now(UTC))
                assert shown["running"].wait(STEP_TIMEOUT_S), "the stream never showed the running job"
                worker_evaluates(settings, job["id"], 0, 5, 0.61)
                worker_sets(settings, job["id"], progress={"epoch": 1, "epochs": 3, "step": 5, "steps": 15})
                assert shown["progress"].wait(STEP_TIMEOUT_S), "the stream never showed the progress"
                worker_evaluates(settings, job["id"], 1, 10, 0.72)
            except BaseException as exc:
                errors.append(exc)
            finally:  # the final status ends the stream whatever happened
                worker_sets(
                    settings,
                    job["id"],
                    status="succeeded",
                    finished_at=datetime.now(UTC),
                    best_metrics={"map": 0.72},
                )

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=alice) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                raw = _follow(response, shown)
        finally:
            thread.join(timeout=4 * STEP_TIMEOUT_S)
    assert not thread.is_alive() and not errors, errors
    assert time.monotonic() - started < 10
    events = _parse_sse(raw)
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    metrics = [data for kind, data in events if kind == "metric"]
    assert [point["map"] for point in metrics] == [0.61, 0.72]
    progress = [data for kind, data in events if kind == "progress"]
    assert progress, "the stream sent no progress event"
    # A progress event carries what moved, not the whole job (spec and all) again.
    assert all(set(data) == {"id", "status", "progress", "best_metrics"} for data in progress)
    assert {"epoch": 1, "epochs": 3, "step": 5, "steps": 15} in [data["progress"] for data in progress]
    assert events[-1][0] == "status" and events[-1][1]["best_metrics"] == {"map": 0.72}
    history = [data for kind, data in events if kind == "history"]
    assert [(e["type"], e["data"].get("epoch")) for e in history] == [
        ("status", None),
        ("epoch", 0),
        ("epoch", 1),
    ]
    assert (
        history[1]["message"].startswith("epoch 0/3: train loss 0.5000")
        and "10.0 samples/s" in history[1]["message"]
    )
    # a client that reconnects with Last-Event-ID gets only newer metric points
    first_metric_id = str(history[1]["id"])
    assert f"id: {first_metric_id}\nevent: metric" in raw  # the metric point carries its event's id
    with TestClient(create_app(fast)) as client:
        replay = client.get(
            f"/v1/jobs/{job['id']}/events", headers=alice | {"Last-Event-ID": first_metric_id}
        )
    assert [d["map"] for kind, d in _parse_sse(replay.text) if kind == "metric"] == [0.72]


def test_another_owner_gets_404_for_every_job_route(
    client: TestClient,
    alice: dict[str, str],
    bob: dict[str, str],
    text_dataset: dict[str, Any],
    settings: Settings,
    post_job: JobPoster,
) -> None:
    job_id = post_job(alice, text_dataset["id"]).json()["id"]
    add_point(settings, job_id, 0, step=10, map_=0.5)  # the series with points is another query
    for method, path in [
        ("get", f"/v1/jobs/{job_id}"),
        ("post", f"/v1/jobs/{job_id}/cancel"),
        ("get", f"/v1/jobs/{job_id}/metrics"),
        ("get", f"/v1/jobs/{job_id}/events"),
    ]:
        assert_problem(client.request(method, path, headers=bob), 404, "not_found")
    assert client.get("/v1/jobs", headers=bob).json()["items"] == []
    assert (
        client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "queued"
    )  # bob cancelled nothing


def test_unreachable_broker_is_503_and_the_job_is_kept_for_the_reconciler(
    settings: Settings, alice: dict[str, str], text_dataset: dict[str, Any]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broken = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
    with TestClient(create_app(broken)) as client:
        body = {"dataset_id": text_dataset["id"], "base_model": "minilm-l6"}
        response = client.post("/v1/jobs", json=body, headers=alice | {"Idempotency-Key": "k1"})
        problem = assert_problem(response, 503, "broker_unavailable")
        assert response.headers["Location"] == f"/v1/jobs/{problem['job_id']}"
        (kept,) = client.get("/v1/jobs", headers=alice).json()["items"]
        assert kept["id"] == problem["job_id"] and kept["status"] == "queued"
        assert job_row(settings, kept["id"]).sent_at is None  # no message: the reconciler's to send
        replay = client.post("/v1/jobs", json=body, headers=alice | {"Idempotency-Key": "k1"})
        assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == kept["id"]


def test_base_models_lists_the_catalog(client: TestClient, alice: dict[str, str]) -> None:
    items = client.get("/v1/base-models", headers=alice).json()["items"]
    by_name = {item["name"]: item for item in items}
    assert set(by_name) >= {"minilm-l6", "mobilenetv2-100", "efficientnet-lite0"}
    assert by_name["minilm-l6"]["modality"] == "text" and by_name["minilm-l6"]["family"] == "transformers"
    assert set(by_name["mobilenetv2-100"]) == {
        "name",
        "modality",
        "family",
        "pretrained",
        "description",
        "defaults",
        "space",
    }


def test_base_models_show_each_models_defaults(client: TestClient, alice: dict[str, str]) -> None:
    body = client.get("/v1/base-models", headers=alice).json()
    for item in body["items"]:
        entry = resolve_base_model(item["name"])
        assert item["defaults"] == asdict(entry.defaults)
    by_name = {item["name"]: item["defaults"] for item in body["items"]}
    # A CNN wants a larger step and smaller images than a transformer's generic 5e-5 and 224 px.
    assert by_name["mobilenetv2-100"]["learning_rate"] > Hyperparameters().learning_rate
    assert by_name["mobilenetv2-100"]["image_size"] is not None and by_name["minilm-l6"]["image_size"] is None
    assert by_name["minilm-l6"]["max_length"] is not None and by_name["mobilenetv2-100"]["max_length"] is None
    assert body["family_defaults"] == {m: asdict(values) for m, values in FAMILY_DEFAULTS.items()}


def test_a_job_takes_its_base_models_defaults_where_the_spec_leaves_them_out(
    alice: dict[str, str], upload: Uploader, post_job: JobPoster, text_dataset: dict[str, Any]
) -> None:
    images = upload(alice, zip_bytes(), filename="colours.zip").json()
    cnn = resolve_base_model("mobilenetv2-100").defaults
    unset = post_job(alice, images["id"], base_model="mobilenetv2-100", hyperparameters={"epochs": 1})
    assert unset.status_code == 202, unset.text
    stored = unset.json()["spec"]["hyperparameters"]  # the stored spec shows the effective values
    assert (stored["learning_rate"], stored["image_size"], stored["batch_size"]) == (
        cnn.learning_rate,
        cnn.image_size,
        cnn.batch_size,
    )
    assert stored["epochs"] == 1 and unset.json()["progress"]["epochs"] == 1  # the spec's own value wins
    # A set field wins even when it is the generic default the model's default replaces.
    chosen = {"learning_rate": 5e-5, "image_size": 224, "batch_size": 4}
    set_ = post_job(alice, images["id"], base_model="mobilenetv2-100", hyperparameters=chosen)
    assert set_.status_code == 202, set_.text
    assert {k: set_.json()["spec"]["hyperparameters"][k] for k in chosen} == chosen
    assert set_.json()["spec"]["hyperparameters"]["epochs"] is None  # a step budget, not the old default
    text = post_job(alice, text_dataset["id"], base_model="minilm-l6").json()["spec"]["hyperparameters"]
    minilm = resolve_base_model("minilm-l6").defaults
    assert (text["learning_rate"], text["max_length"]) == (minilm.learning_rate, minilm.max_length)


def test_the_new_loss_presets_are_accepted_with_their_own_parameters_only(
    alice: dict[str, str], text_dataset: dict[str, Any], settings: Settings, post_job: JobPoster
) -> None:
    response = post_job(alice, text_dataset["id"], loss={"name": "dbl", "neg_scale": 5})
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["loss"] == {
        "name": "dbl",
        "map_alpha": 0.1,
        "map_beta": 10.0,
        "map_gamma": 0.2,
        "init_bias": 0.05,
        "neg_scale": 5.0,
        "gamma": 2.0,
        "balance": 2.0,
    }
    for loss in ({"name": "hill"}, {"name": "splc", "tau": 0.7}, {"name": "twoway", "tp": 2}):
        created = post_job(alice, text_dataset["id"], loss=loss)
        assert created.status_code == 202, created.text
        assert created.json()["spec"]["loss"]["name"] == loss["name"]
        assert "clip" not in created.json()["spec"]["loss"]
    drain_broker(settings, expect=4)
