"""Durable webhook deliveries (core/webhooks/outbox.py, notify.py) on SQLite and PostgreSQL.

A delivery is written with the job's final state, survives the process that should
have sent it, and each of its attempts is made at most once, however many processes
try at the same moment.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from core.db.models import WebhookDelivery, utcnow
from core.db.session import session_scope
from core.jobs import lifecycle
from core.jobs.status import JobStatus
from core.settings import Settings
from core.webhooks import outbox
from core.webhooks.delivery import attempt, http_client
from core.webhooks.notify import dispatch_due, run_delivery
from tests.apl.synthetic import write_text_dataset
from tests.client.receiver import Receiver, running_receiver
from tests.worker.harness import make_dataset, make_job, make_owner


@pytest.fixture
def hooked(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private_addresses": True})


def _failed_job(settings: Settings, url: str | None) -> str:
    owner = make_owner(settings)
    dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=12), "text")
    spec = {"base_model": "minilm-l6", **({"webhook_url": url} if url else {})}
    job_id = make_job(settings, owner, dataset, spec)
    claimed = lifecycle.claim(job_id, settings)
    assert claimed is not None
    assert lifecycle.finish(job_id, claimed.attempt, JobStatus.FAILED, settings, "internal", "boom")
    return job_id


def _row(settings: Settings, job_id: str) -> WebhookDelivery:
    with session_scope(settings) as session:
        row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        session.expunge(row)
        return row


def test_the_final_transition_writes_the_delivery_in_its_own_transaction(hooked: Settings) -> None:
    job_id = _failed_job(hooked, "https://hooks.example.org/x")
    row = _row(hooked, job_id)
    assert row.status == outbox.PENDING and row.attempts == 0 and row.event == "job.failed"
    payload = json.loads(row.body)
    assert payload["id"] == row.id and payload["job"]["id"] == job_id
    assert payload["job"]["error"] == {"code": "internal", "message": "boom"}
    silent = _failed_job(hooked, None)
    with session_scope(hooked) as session:
        assert session.scalar(select(WebhookDelivery).where(WebhookDelivery.job_id == silent)) is None


def _two_at_once(target: object, count: int = 2) -> list[object]:
    results: list[object] = []
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        results.append(target())  # type: ignore[operator]

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _attempts(receiver: Receiver) -> list[tuple[str, str]]:
    return [(c.headers["X-Aplserve-Delivery"], c.headers["X-Aplserve-Attempt"]) for c in receiver.calls]


def test_a_delivery_outlives_its_sender_and_each_attempt_is_made_once(hooked: Settings) -> None:
    with running_receiver([502]) as receiver:
        job_id = _failed_job(hooked, receiver.url)
        delivery_id = _row(hooked, job_id).id
        # Two processes race for attempt 1: one wins; its answer (502) is recorded, a retry is due later.
        claims = [c for c in _two_at_once(lambda: outbox.claim_attempt(hooked, delivery_id)) if c]
        assert len(claims) == 1
        claimed = claims[0]
        assert isinstance(claimed, outbox.ClaimedAttempt) and claimed.number == 1
        with http_client() as client:
            made, final = attempt(client, claimed.delivery, claimed.number)
        assert made.status == 502 and not final
        status = outbox.record_attempt(hooked, claimed, made, final=final, max_attempts=5, first_backoff=0.2)
        assert status == outbox.PENDING
        assert outbox.claim_attempt(hooked, delivery_id) is None  # not due yet
        # Attempt 2 is claimed by a sender that dies without answering: its lease holds the attempt.
        later = utcnow() + timedelta(seconds=1)
        dying = outbox.claim_attempt(hooked, delivery_id, now=later)
        assert dying is not None and dying.number == 2
        assert outbox.due_deliveries(hooked, now=later) == []
        # After the restart: the lease has expired; two dispatchers resume; attempt 3 goes out once.
        with session_scope(hooked) as session:  # the time that passes while the process is down
            row = session.get_one(WebhookDelivery, delivery_id)
            row.lease_expires_at = row.next_attempt_at = utcnow() - timedelta(seconds=1)
        assert outbox.due_deliveries(hooked) == [delivery_id]
        outcomes = _two_at_once(lambda: run_delivery(hooked, delivery_id, first_backoff=0.05))
        assert sorted(map(str, outcomes)) == ["None", outbox.DELIVERED]  # one sent it, one found it taken
    assert _attempts(receiver) == [(delivery_id, "1"), (delivery_id, "3")]
    row = _row(hooked, job_id)
    assert row.status == outbox.DELIVERED and row.attempts == 3 and row.last_status_code == 200


def test_the_sweep_resumes_pending_deliveries(hooked: Settings) -> None:
    with running_receiver() as receiver:
        job_id = _failed_job(hooked, receiver.url)  # nobody sent it: the process "stopped" here
        threads = dispatch_due(hooked)
        assert len(threads) == 1
        threads[0].join(30)
        (call,) = receiver.wait_for(1, timeout=10)
    assert json.loads(call.body)["job"]["id"] == job_id
    assert _row(hooked, job_id).status == outbox.DELIVERED
    assert dispatch_due(hooked) == []  # nothing left to send
