"""The hook called where a job reaches a final state: build the signed call and send it.

Called by the worker (succeeded, failed, cancelled while running, lost) and by the
API (cancelled while queued), once per transition: each caller calls it only when
its own conditional UPDATE made the change. It never raises: a webhook problem must
not change how a job ends.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import Job, utcnow
from core.db.session import session_scope
from core.jobs import document
from core.jobs.status import FINAL_STATUSES
from core.settings import Settings
from core.webhooks.delivery import Delivery, deliver_in_background
from core.webhooks.owner_secrets import get_or_create_secret

log = logging.getLogger(__name__)


def job_document(row: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/{id} shows it (a finished job has no queue position)."""
    return document.job_from_row(row, queue_position=None).model_dump(mode="json")


def build_delivery(session: Session, job_id: str, allow_private: bool = False) -> Delivery | None:
    """The call for a finished job that names a webhook_url, else None. May commit (new secret)."""
    row = session.get(Job, job_id, populate_existing=True)
    if row is None or row.status not in FINAL_STATUSES:
        return None
    url = (row.spec or {}).get("webhook_url")
    if not url:
        return None
    event = f"job.{row.status}"
    delivery_id = str(uuid.uuid4())
    payload = {
        "id": delivery_id,
        "event": event,
        "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        "job": job_document(row),
    }
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
    secret = get_or_create_secret(session, row.owner_id)
    return Delivery(
        id=delivery_id, url=str(url), event=event, body=body, secret=secret, allow_private=allow_private
    )


def notify_job_finished(
    session: Session, job_id: str, allow_private: bool = False
) -> threading.Thread | None:
    """Send the job's webhook in the background, if it has one; the sending thread, for tests."""
    try:
        delivery = build_delivery(session, job_id, allow_private)
        if delivery is None:
            return None
        log.info("sending webhook %s (%s) for job %s", delivery.id, delivery.event, job_id)
        return deliver_in_background(delivery)
    except Exception:
        log.exception("the webhook of job %s could not be prepared", job_id)
        return None


def notify_job_finished_by_id(job_id: str, settings: Settings) -> threading.Thread | None:
    """The same for callers that hold settings, not a session (the worker)."""
    try:
        with session_scope(settings) as session:
            return notify_job_finished(session, job_id, settings.webhook_allow_private_addresses)
    except Exception:
        log.exception("the webhook of job %s could not be prepared", job_id)
        return None
