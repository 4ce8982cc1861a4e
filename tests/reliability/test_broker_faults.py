"""A broker that hangs (SIGSTOP) or loses its data (FLUSHALL): no job is lost, nothing stalls.

Each test starts its own redis-server on a free port and does to it what a real outage
does; the shared Redis is never touched. The API runs as a real server process, the
reconciler (which in production runs in every worker's sweep) is called directly.
"""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.db.migrate import upgrade_to_head
from core.db.models import Job
from core.db.session import dispose_engines, session_scope
from core.jobs import dispatch
from core.settings import Settings
from tests.api.conftest import assert_problem, csv_bytes
from tests.reliability.faults import PrivateRedis
from tests.reliability.servers import HealthProbe, Server, explicit_env, outside_settings
from tests.services import unique_name
from tests.worker.harness import job_row, start_worker, wait_for, wait_for_status

SEND_TIMEOUT = 1.0


def broker_settings(tmp_path: Path, broker: PrivateRedis, **fields: object) -> Settings:
    settings = outside_settings(
        tmp_path,
        broker_url=broker.url,
        queue_name=unique_name("aplserve_rel_q"),
        broker_send_timeout_seconds=SEND_TIMEOUT,
        **fields,
    )
    upgrade_to_head(settings)
    return settings


def queued_ids(broker: PrivateRedis, queue: str) -> list[str]:
    """The job ids of the messages waiting in the queue, in the order a worker receives them."""
    with broker.client() as client:
        raw = client.lrange(queue, 0, -1)
    ids = []
    for item in reversed(raw):  # kombu LPUSHes and its consumers BRPOP: the tail is next
        message = json.loads(item)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.append(args[0])
    return ids


def _in_order(expected: list[str], actual: list[str]) -> bool:
    """`expected` appears in `actual` in this order (other items may come between)."""
    remaining = iter(actual)
    return all(item in remaining for item in expected)


#: Enough rows for a sweep's test split as well as a job's validation split.
ROWS = [(f"row {i}", ["a" if i % 2 else "b", *(["c"] if i % 3 == 0 else [])]) for i in range(40)]


def _dataset(client: httpx.Client) -> str:
    response = client.post("/v1/datasets", files={"file": ("d.csv", csv_bytes(ROWS), "text/csv")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _post_all(
    url: str, headers: dict[str, str], bodies: list[tuple[str, dict[str, Any]]], path: str = "/v1/jobs"
) -> list[tuple[float, Any]]:
    """POST each (idempotency key, body) at once from its own thread; (seconds, response) each.

    One shared client (a connection each): making a client per thread costs the shared CPU more
    than the requests do.
    """
    answers: list[tuple[float, Any]] = [(0.0, None)] * len(bodies)
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    with httpx.Client(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        def post(index: int, key: str, body: dict[str, Any]) -> None:
            started = time.monotonic()
            response = client.post(path, json=body, headers={"Idempotency-Key": key})
            answers[index] = (time.monotonic() - started, response)

        threads = [threading.Thread(target=post, args=(i, k, b)) for i, (k, b) in enumerate(bodies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    return answers


def test_a_hung_broker_answers_503_fast_keeps_the_jobs_and_the_reconciler_sends_them(
    tmp_path: Path, broker: PrivateRedis
) -> None:
    settings = broker_settings(tmp_path, broker)
    server = Server(settings, tmp_path / "logs", env={"APLSERVE_READINESS_TIMEOUT_SECONDS": "1"})
    try:
        headers = server.key()
        with server.client(headers) as client:
            spec = {"dataset_id": _dataset(client), "base_model": "minilm-l6"}
            first = client.post("/v1/jobs", json=spec)
            assert first.status_code == 202, first.text
        assert queued_ids(broker, settings.queue_name) == [first.json()["id"]]

        broker.sigstop()
        with HealthProbe(server.url) as probe:
            answers = _post_all(server.url, headers, [(f"key-{i}", spec) for i in range(8)])
            with server.client() as client:
                ready = client.get("/readyz")
        for seconds, response in answers:
            problem = assert_problem(response, 503, "broker_unavailable")
            assert seconds < SEND_TIMEOUT + 2.0, f"a POST took {seconds:.1f} s with the broker hung"
            assert response.headers["Location"] == f"/v1/jobs/{problem['job_id']}"
        body = assert_problem(ready, 503, "not_ready")
        assert body["broker"] == "timeout" and body["database"] == "ok"
        assert probe.failures == 0 and len(probe.latencies) >= 5
        assert statistics.median(probe.latencies) < 0.1 and max(probe.latencies) < 0.5, probe.latencies
        saved = [response.json()["job_id"] for _, response in answers]
        assert all(job_row(settings, job_id).status == "queued" for job_id in saved)
        # The Idempotency-Key replay returns the saved job (still unsent: the broker is down).
        with server.client(headers) as client:
            replay = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "key-3"})
        assert replay.status_code == 202 and replay.json()["id"] == saved[3]

        broker.sigcont()
        result = dispatch.reconcile(settings)
        by_age = sorted(saved, key=lambda job_id: job_row(settings, job_id).created_at)
        assert result.sent == by_age and result.error is None  # oldest first
        waiting = queued_ids(broker, settings.queue_name)
        # Sends that timed out for the API may still land once the broker wakes up (the bytes
        # were in its socket buffer): duplicates, which the worker's claim makes no-ops.
        assert waiting[0] == first.json()["id"] and _in_order(by_age, waiting)
        assert set(waiting) == {first.json()["id"], *saved}
        assert dispatch.reconcile(settings).sent == []  # every job has its message now
    finally:
        server.close()
        dispose_engines()


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/sweeps"])
def test_a_send_waiting_on_a_hung_broker_holds_up_no_other_request(
    tmp_path: Path, broker: PrivateRedis, path: str
) -> None:
    """The wait for the broker runs on threads of its own (`broker_send_threads`): with a single
    route thread, a POST of a job or a sweep stuck in its send leaves the job list answering at once."""
    timeout = 3.0
    settings = broker_settings(tmp_path, broker)
    env = {"APLSERVE_API_THREADS": "1", "APLSERVE_BROKER_SEND_TIMEOUT_SECONDS": str(timeout)}
    server = Server(settings, tmp_path / "logs", env=env)
    try:
        headers = server.key()
        with server.client(headers) as client:
            spec = {"dataset_id": _dataset(client), "base_model": "minilm-l6"}
        if path == "/v1/sweeps":
            spec |= {"seeds": [0], "candidates": [{"name": "bce"}, {"name": "apl"}]}
        broker.sigstop()
        with ThreadPoolExecutor(1) as pool:
            posting = pool.submit(_post_all, server.url, headers, [("stuck", spec)], path)
            # The jobs are committed before their send starts: once a row is there, the send waits.
            wait_for(lambda: _job_ids(settings), 30, "the job committed")
            with server.client(headers) as client:
                started = time.monotonic()
                listed = client.get("/v1/jobs")
                seconds = time.monotonic() - started
            [(post_seconds, posted)] = posting.result(timeout=60)
    finally:
        broker.sigcont()
        server.close()
        dispose_engines()
    assert listed.status_code == 200 and seconds < 1.0, f"GET /v1/jobs took {seconds:.2f} s"
    problem = assert_problem(posted, 503, "broker_unavailable")
    assert listed.json()["items"] and {job["id"] for job in listed.json()["items"]} <= set(problem["job_ids"])
    assert post_seconds >= timeout - 0.5


def _job_ids(settings: Settings) -> list[str]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Job.id)))


def test_a_flushed_broker_gets_every_queued_job_again_in_queue_order(
    tmp_path: Path, broker: PrivateRedis
) -> None:
    settings = broker_settings(tmp_path, broker, job_resend_after_seconds=0.5)
    server = Server(settings, tmp_path / "logs", env={"APLSERVE_READINESS_TIMEOUT_SECONDS": "1"})
    try:
        with server.client(server.key()) as client:
            spec = {"dataset_id": _dataset(client), "base_model": "minilm-l6"}
            ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(3)]
            assert queued_ids(broker, settings.queue_name) == ids
            broker.flushall()  # a Redis restarted without persistence looks the same
            sent_at = [job_row(settings, job_id).sent_at for job_id in ids]
            # Within job_resend_after_seconds of their send, messages are not presumed lost ...
            assert dispatch.reconcile(settings, now=min(sent_at)).sent == []
            # ... after it they are, and every queued job is sent again, oldest first.
            later_on = max(sent_at) + timedelta(seconds=settings.job_resend_after_seconds + 0.1)
            assert dispatch.reconcile(settings, now=later_on).sent == ids
            assert queued_ids(broker, settings.queue_name) == ids
            later = client.post("/v1/jobs", json=spec).json()
            positions = [client.get(f"/v1/jobs/{job_id}").json()["queue_position"] for job_id in ids]
        assert positions == [0, 1, 2] and later["queue_position"] == 3
        assert queued_ids(broker, settings.queue_name) == [*ids, later["id"]]
        assert dispatch.reconcile(settings).sent == []  # the broker holds one message per job again
    finally:
        server.close()
        dispose_engines()


# --- the long runs (make reliability): real workers, real training, measured recovery ------------


def _tiny_spec(dataset_id: str, model: str, **extra: Any) -> dict[str, Any]:
    hp = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16, "seed": 0}
    return {
        "dataset_id": dataset_id,
        "base_model": model,
        "loss": {"name": "apl"},
        "hyperparameters": hp,
    } | extra


def _text_dataset(client: httpx.Client) -> str:
    from tests.e2e.live import text_csv

    response = client.post("/v1/datasets", files={"file": ("d.csv", text_csv(48), "text/csv")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.reliability
def test_a_broker_flushed_mid_queue_loses_no_job(
    tmp_path: Path, full_mode: Settings, broker: PrivateRedis, tiny_bert: str
) -> None:
    settings = full_mode
    server = Server(settings, tmp_path / "logs")
    worker = start_worker(settings, tmp_path / "worker.log", **explicit_env(settings))
    try:
        with server.client(server.key()) as client:
            spec = _tiny_spec(_text_dataset(client), tiny_bert)
            ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(4)]
            wait_for_status(settings, ids[0], ("running",))
            waiting = queued_ids(broker, settings.queue_name)
            assert waiting == ids[1:]
            broker.flushall()
            flushed = time.monotonic()
            wait_for_status(settings, ids[1], ("running", "succeeded"), timeout=120)
            resent = time.monotonic() - flushed
            for job_id in ids:
                wait_for_status(settings, job_id, ("succeeded",), timeout=240)
            recovered = time.monotonic() - flushed
            rows = [job_row(settings, job_id) for job_id in ids]
    finally:
        worker.close()
        server.close()
    assert [row.status for row in rows] == ["succeeded"] * 4
    assert [row.attempts for row in rows] == [1] * 4  # none ran twice, whatever the copies
    print(f"\nRECOVERY flush: next job running {resent:.1f} s after FLUSHALL, all 4 done {recovered:.1f} s")
    assert resent < settings.job_resend_after_seconds + 30


@pytest.mark.reliability
def test_45_posts_during_a_broker_hang_are_all_kept_and_sent_when_it_is_back(
    tmp_path: Path, full_mode: Settings, broker: PrivateRedis
) -> None:
    settings = full_mode
    server = Server(settings, tmp_path / "logs", env={"APLSERVE_QUOTA_ACTIVE_JOBS": "100"})
    try:
        headers = server.key()
        with server.client(headers) as client:
            spec = {"dataset_id": _dataset(client), "base_model": "minilm-l6"}
        broker.sigstop()
        with HealthProbe(server.url) as probe:
            answers = _post_all(server.url, headers, [(f"hang-{i}", spec) for i in range(45)])
        slowest = max(seconds for seconds, _ in answers)
        assert [response.status_code for _, response in answers] == [503] * 45
        saved = {response.json()["job_id"] for _, response in answers}
        broker.sigcont()
        resumed = time.monotonic()
        result = dispatch.reconcile(settings)
        sent_after = time.monotonic() - resumed
    finally:
        server.close()
    assert set(result.sent) == saved and len(saved) == 45
    assert saved <= set(queued_ids(broker, settings.queue_name))
    latencies = sorted(probe.latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"\nRECOVERY hang: 45 POSTs answered 503 in at most {slowest:.2f} s; /healthz p99 "
        f"{p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms over {len(latencies)} probes; "
        f"all 45 sent {sent_after:.2f} s after SIGCONT"
    )
    assert slowest < settings.broker_send_timeout_seconds + 5
    # /healthz never waits on the broker or the thread pool; what it does wait for is the CPU, which
    # 45 requests at once share with it (figures and the machine's load: docs/reliability.md).
    assert probe.failures == 0 and statistics.median(latencies) < 0.1 and latencies[-1] < 1.0
