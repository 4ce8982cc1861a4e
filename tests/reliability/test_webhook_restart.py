"""Webhook deliveries outlive the worker that should have sent them (real processes, `make reliability`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db.models import WebhookDelivery
from core.db.session import session_scope
from core.jobs import dispatch
from core.settings import Settings
from tests.apl.synthetic import write_text_dataset
from tests.client.receiver import running_receiver
from tests.reliability.servers import explicit_env
from tests.worker.harness import make_dataset, make_job, make_owner, start_worker, wait_for, wait_for_status

TINY = {"epochs": 1, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16, "seed": 0}


def _delivered(settings: Settings, job_id: str) -> WebhookDelivery | None:
    with session_scope(settings) as session:
        row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        session.expunge(row)
        return row if row.status == "delivered" else None


@pytest.mark.reliability
def test_a_webhook_pending_when_the_worker_dies_is_sent_by_the_next_one(
    tmp_path: Path, full_mode: Settings, tiny_bert: str
) -> None:
    settings = full_mode
    with running_receiver([503]) as receiver:  # the first attempt fails; a retry is due 1 s later
        owner = make_owner(settings)
        dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=24), "text")
        spec = {"base_model": tiny_bert, "webhook_url": receiver.url, "hyperparameters": TINY}
        job_id = make_job(settings, owner, dataset, spec)
        worker = start_worker(settings, tmp_path / "worker-1.log", **explicit_env(settings))
        try:
            with session_scope(settings) as session:
                dispatch.send(session, settings, [job_id])
            receiver.wait_for(1, timeout=240)
            worker.kill()  # SIGKILL before the retry: the in-memory retry dies with it
        finally:
            worker.close()
        died = time.monotonic()
        assert wait_for_status(settings, job_id, ("succeeded",)).status == "succeeded"
        restarted = start_worker(settings, tmp_path / "worker-2.log", **explicit_env(settings))
        try:
            calls = receiver.wait_for(2, timeout=120)
            resumed = time.monotonic() - died
            row = wait_for(lambda: _delivered(settings, job_id), 30, "the delivery to be recorded")
        finally:
            restarted.close()
    pairs = [(c.headers["X-Aplserve-Delivery"], c.headers["X-Aplserve-Attempt"]) for c in receiver.calls]
    assert len(pairs) == len(set(pairs)) == 2  # each attempt once
    assert [attempt for _, attempt in pairs] == ["1", "2"] and pairs[0][0] == pairs[1][0]
    assert [c.answered for c in calls] == [503, 200]
    assert json.loads(calls[1].body)["job"]["status"] == "succeeded"
    assert row.attempts == 2 and row.last_status_code == 200
    print(f"\nRECOVERY webhook: delivered by the restarted worker {resumed:.1f} s after the first was killed")
