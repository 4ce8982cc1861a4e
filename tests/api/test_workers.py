"""Routing jobs to workers with the devices they ask for: GET /v1/workers, 422
`devices_unavailable` when no live worker has enough, a clear reason when every worker
that has them is busy, and the device queue a multi-device job's message goes to."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from kombu import Connection
from sqlalchemy import select, update

from core import workers
from core.broker import device_queue, worker_queues
from core.db.models import JobEvent, Worker, utcnow
from core.db.session import session_scope
from core.settings import Settings
from tests.api.conftest import JobPoster, assert_problem


def _worker(settings: Settings, name: str, count: int, kind: str = "cpu", job_id: str | None = None) -> None:
    workers.announce(settings, workers.WorkerInfo(name, "host", 1, kind, count), job_id)


def _drain(settings: Settings, queue_name: str, expect: int, timeout: float = 5.0) -> list[Any]:
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    with Connection(settings.resolved_broker_url) as connection:
        queue = connection.SimpleQueue(queue_name)
        try:
            while len(received) < expect and time.monotonic() < deadline:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                received.append(message.payload[0][0])
                message.ack()
        finally:
            queue.close()
    return received


def _first_event(settings: Settings, job_id: str) -> str:
    with session_scope(settings) as session:
        return (
            session.scalars(
                select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            ).first()
            or ""
        )


def test_workers_are_listed_with_their_devices(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    assert client.get("/v1/workers", headers=alice).json() == {"items": [], "max_devices": 0}
    _worker(settings, "aplserve-1@gpu", 4, "cuda")
    _worker(settings, "aplserve-2@cpu", 1, job_id="job-1")
    _worker(settings, "aplserve-3@gone", 8, "cuda")
    with session_scope(settings) as session:  # a worker that stopped sweeping long ago
        old = utcnow() - timedelta(seconds=workers.live_seconds(settings) + 1)
        session.execute(update(Worker).where(Worker.id == "aplserve-3@gone").values(seen_at=old))
    body = client.get("/v1/workers", headers=alice).json()
    assert [(w["id"], w["device_kind"], w["devices"], w["busy"]) for w in body["items"]] == [
        ("aplserve-1@gpu", "cuda", 4, False),
        ("aplserve-2@cpu", "cpu", 1, True),
    ]
    assert body["max_devices"] == 4
    assert client.get("/v1/workers").status_code == 401 or not settings.auth_enabled


def test_a_job_needing_more_devices_than_any_worker_has_is_refused(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    text_dataset: dict[str, Any],
    post_job: JobPoster,
) -> None:
    hp = {"batch_size": 8, "devices": 4}
    body = assert_problem(post_job(alice, text_dataset["id"], hyperparameters=hp), 422, "devices_unavailable")
    assert "no live worker has 4 devices" in body["detail"] and "none is running" in body["detail"]
    _worker(settings, "aplserve-7@box", 2)
    body = assert_problem(post_job(alice, text_dataset["id"], hyperparameters=hp), 422, "devices_unavailable")
    assert "aplserve-7@box (2 cpu)" in body["detail"]
    assert body["workers"] == [{"id": "aplserve-7@box", "devices": 2, "kind": "cpu"}]
    assert body["errors"][0]["loc"] == ["body", "hyperparameters", "devices"]
    # One device never asks a worker list: it waits for any worker, as every job always has.
    assert post_job(alice, text_dataset["id"], hyperparameters={"devices": 1}).status_code == 202
    assert (
        post_job(alice, text_dataset["id"], hyperparameters={"batch_size": 8, "devices": "auto"}).status_code
        == 202
    )


def test_a_multi_device_job_goes_to_its_device_queue_and_says_when_workers_are_busy(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    text_dataset: dict[str, Any],
    post_job: JobPoster,
) -> None:
    _worker(settings, "aplserve-8@box", 2)
    free = post_job(alice, text_dataset["id"], hyperparameters={"batch_size": 8, "devices": 2})
    assert free.status_code == 202, free.text
    assert _first_event(settings, free.json()["id"]) == "queued: the job was accepted and waits for a worker"
    _worker(settings, "aplserve-8@box", 2, job_id=free.json()["id"])  # it took the job
    busy = post_job(alice, text_dataset["id"], hyperparameters={"batch_size": 8, "devices": 2})
    assert busy.status_code == 202, busy.text
    assert "every worker with 2 or more devices is busy (aplserve-8@box (2 cpu))" in _first_event(
        settings, busy.json()["id"]
    )
    queue = device_queue(settings, 2)
    assert queue == f"{settings.queue_name}.devices-2" and queue in worker_queues(settings, 2)
    assert worker_queues(settings, 1) == [settings.queue_name]
    assert _drain(settings, queue, expect=2) == [free.json()["id"], busy.json()["id"]]
