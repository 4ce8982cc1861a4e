"""The durable webhook outbox: a `webhook_deliveries` row per job that names a webhook_url.

The row is written by the job's final transition (core.jobs.lifecycle calls
`record_final` inside the transaction of its conditional UPDATE), so the call exists
as soon as the state does and survives any restart. Attempts are then made by
whichever process gets there first: the process that ended the job right away, or the
periodic `due_deliveries` scan in every worker's sweep after a restart.

At most once per attempt: `claim_attempt` moves `attempts` from n to n + 1 with a
conditional UPDATE and leases the attempt; only the winner POSTs attempt n + 1, and
`record_attempt` is fenced on the same number. A sender that dies mid-attempt leaves a
lease that expires; the next attempt then gets the next number. The delivery id stays
the same across attempts so a receiver can deduplicate on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.db.models import Job, WebhookDelivery, new_id, utcnow
from core.db.session import session_scope
from core.jobs import document
from core.jobs.status import FINAL_STATUSES
from core.settings import Settings
from core.webhooks.delivery import TIMEOUT_SECONDS, Attempt, Delivery, backoff_seconds
from core.webhooks.owner_secrets import get_or_create_secret

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
#: How long one attempt may take before another process may presume its sender dead.
ATTEMPT_LEASE_SECONDS = TIMEOUT_SECONDS + 20.0


def job_document(row: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/{id} shows it (a finished job has no queue position)."""
    return document.job_from_row(row, queue_position=None).model_dump(mode="json")


def record_final(session: Session, job_id: str) -> str | None:
    """Add the delivery for a job that just reached a final state, if it names a webhook_url.

    Runs inside the caller's transaction (which commits it with the state change);
    returns the delivery id, or None when the job has no webhook.
    """
    row = session.get(Job, job_id, populate_existing=True)
    if row is None or row.status not in FINAL_STATUSES:
        return None
    url = (row.spec or {}).get("webhook_url")
    if not url:
        return None
    existing = session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.job_id == job_id))
    if existing is not None:
        return existing
    now = utcnow()
    delivery_id = new_id()
    event = f"job.{row.status}"
    payload = {
        "id": delivery_id,
        "event": event,
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "job": job_document(row),
    }
    session.add(
        WebhookDelivery(
            id=delivery_id,
            job_id=job_id,
            owner_id=row.owner_id,
            url=str(url),
            event=event,
            body=json.dumps(payload, separators=(",", ":"), sort_keys=True),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
        )
    )
    session.flush()
    return delivery_id


def delivery_of_job(settings: Settings, job_id: str) -> str | None:
    with session_scope(settings) as session:
        return session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.job_id == job_id))


@dataclass(frozen=True)
class ClaimedAttempt:
    """The attempt this process may make, and only it: number `number` of delivery `delivery.id`."""

    delivery: Delivery
    number: int


def claim_attempt(settings: Settings, delivery_id: str, now: datetime | None = None) -> ClaimedAttempt | None:
    """Take the next attempt of a due delivery; None when it is not due, done, or another process has it."""
    now = now or utcnow()
    with session_scope(settings) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None or row.status != PENDING:
            return None
        if (row.next_attempt_at and row.next_attempt_at > now) or (
            row.lease_expires_at and row.lease_expires_at > now
        ):
            return None
        seen = row.attempts
        won = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == PENDING,
                WebhookDelivery.attempts == seen,
            )
            .values(attempts=seen + 1, lease_expires_at=now + timedelta(seconds=ATTEMPT_LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return None
        url, event, body, owner_id = row.url, row.event, row.body, row.owner_id
        secret = get_or_create_secret(session, owner_id)  # commits the claim too
    delivery = Delivery(
        id=delivery_id,
        url=url,
        event=event,
        body=body.encode("utf-8"),
        secret=secret,
        allow_private=settings.webhook_allow_private_addresses,
    )
    return ClaimedAttempt(delivery, seen + 1)


def record_attempt(
    settings: Settings,
    claimed: ClaimedAttempt,
    attempt: Attempt,
    *,
    final: bool,
    max_attempts: int,
    first_backoff: float,
) -> str:
    """Store how an attempt went; the delivery's new status (pending: another attempt is due later).

    `final` says the answer ends the delivery whatever it was (a 2xx, a refusal).
    """
    now = utcnow()
    delivered = attempt.status is not None and 200 <= attempt.status < 300
    values: dict[str, Any] = {
        "lease_expires_at": None,
        "last_status_code": attempt.status,
        "last_error": attempt.error,
    }
    if delivered:
        values |= {"status": DELIVERED, "finished_at": now, "next_attempt_at": None}
    elif final or claimed.number >= max_attempts:
        values |= {"status": FAILED, "finished_at": now, "next_attempt_at": None}
    else:
        values |= {"next_attempt_at": now + timedelta(seconds=backoff_seconds(claimed.number, first_backoff))}
    with session_scope(settings) as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.delivery.id, WebhookDelivery.attempts == claimed.number)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    return str(values.get("status", PENDING))


def due_deliveries(settings: Settings, now: datetime | None = None, limit: int = 50) -> list[str]:
    """Pending deliveries whose next attempt is due and not leased by a live sender, oldest first."""
    now = now or utcnow()
    with session_scope(settings) as session:
        rows = session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
        )
        return list(rows)
