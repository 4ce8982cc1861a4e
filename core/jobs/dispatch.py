"""Getting every committed queued job to a worker: the one send path and the reconciler.

A job is committed first and sent second, so the database can hold a queued job
without a message: its send failed or timed out (the broker was down or hung), the
process died between commit and send, or the broker lost the message afterwards (a
restart without persistence, FLUSHALL, a failover). The outbox mark `jobs.sent_at`
(core.jobs.lifecycle) tells the first cases apart, and the broker's queue depth the
last: when the broker holds fewer messages than there are sent queued jobs, some
messages are gone.

`send` is what POST /v1/jobs (and everything that creates jobs through the jobs
service) and the lease sweeper call; `reconcile` runs in every worker's sweep. Both
send oldest first, so after a flush the broker's order is the database's again and
queue positions (lifecycle.queue_positions) stay true. A job sent twice is harmless:
the worker's claim is a conditional UPDATE, so a second message finds it taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.broker import BrokerUnavailable, device_queue, send_jobs, waiting_messages
from core.db.models import Job, utcnow
from core.db.session import session_scope
from core.jobs import lifecycle
from core.settings import Settings

log = logging.getLogger(__name__)

#: A queue shorter than expected is measured again after this long before anything is re-sent:
#: a worker may hold a message it has not claimed yet for a moment.
RECHECK_SECONDS = 0.5


def job_devices(spec: dict[str, Any]) -> int:
    """The devices a stored spec asks for (`auto` and an old spec without the field: 1, any worker)."""
    devices = spec.get("hyperparameters", {}).get("devices", 1)
    return devices if isinstance(devices, int) else 1


def device_queues(session: Session, settings: Settings, job_ids: Collection[str]) -> dict[str, str]:
    """The broker queue of each job, from the devices its spec asks for (core.broker.device_queue)."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.spec).where(Job.id.in_(list(job_ids)))).all()
    return {job_id: device_queue(settings, job_devices(spec or {})) for job_id, spec in rows}


def send(session: Session, settings: Settings, job_ids: Sequence[str]) -> list[str]:
    """Send these committed queued jobs now, unless another sender already has; the ids sent.

    Raises BrokerUnavailable when the broker cannot take them within the send timeout;
    they then stay queued without a message and the reconciler sends them later.
    """
    taken = lifecycle.take_for_sending(session, job_ids)
    if not taken:
        return []
    try:
        send_jobs(taken, settings, device_queues(session, settings, taken))
    except BrokerUnavailable:
        lifecycle.mark_unsent(session, taken)
        raise
    return taken


@dataclass
class ReconcileResult:
    """What one pass found and did (for logs and tests)."""

    unsent: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    waiting: int | None = None
    error: str | None = None


def _marks(settings: Settings) -> list[tuple[str, datetime | None]]:
    with session_scope(settings) as session:
        return lifecycle.queued_send_marks(session)


def _queues_in_use(settings: Settings) -> list[str]:
    """The device queues of the queued jobs (the named queue always), whose messages are counted."""
    with session_scope(settings) as session:
        ids = [job_id for job_id, _ in lifecycle.queued_send_marks(session)]
        queues = set(device_queues(session, settings, ids).values())
    return sorted(queues | {settings.queue_name})


def _short_of_messages(settings: Settings) -> tuple[bool, int]:
    """Whether the broker holds fewer messages than there are sent queued jobs, twice in a row."""
    queues = _queues_in_use(settings)
    waiting = waiting_messages(settings, queues)
    if waiting >= sum(1 for _, sent_at in _marks(settings) if sent_at is not None):
        return False, waiting
    time.sleep(RECHECK_SECONDS)
    waiting = waiting_messages(settings, queues)
    return waiting < sum(1 for _, sent_at in _marks(settings) if sent_at is not None), waiting


def reconcile(settings: Settings, now: datetime | None = None) -> ReconcileResult:
    """Send queued jobs that have no message: never sent, or sent but lost by the broker.

    Lost messages are only presumed when the broker's queue is shorter than the number
    of sent queued jobs; then every job last sent over `job_resend_after_seconds` ago is
    sent again (which of them are missing is not knowable; extra copies are no-ops).
    """
    result = ReconcileResult()
    marks = _marks(settings)
    if not marks:
        return result
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.job_resend_after_seconds)
    result.unsent = [job_id for job_id, sent_at in marks if sent_at is None]
    try:
        short, result.waiting = _short_of_messages(settings)
    except BrokerUnavailable as error:
        result.error = str(error)
        return result
    if short:
        result.lost = [job_id for job_id, sent_at in marks if sent_at is not None and sent_at < cutoff]
    due = set(result.unsent) | set(result.lost)
    ordered = [job_id for job_id, _ in marks if job_id in due]
    if not ordered:
        return result
    with session_scope(settings) as session:
        taken = lifecycle.take_for_sending(session, ordered, sent_before=cutoff)
        try:
            send_jobs(taken, settings, device_queues(session, settings, taken))
        except BrokerUnavailable as error:
            lifecycle.mark_unsent(session, taken)
            result.error = str(error)
            return result
    result.sent = taken
    if result.lost:
        log.warning(
            "the broker holds %d message(s) for more queued jobs; sent %d job(s) again",
            result.waiting,
            len(taken),
        )
    elif taken:
        log.info("sent %d queued job(s) that had no message", len(taken))
    return result
