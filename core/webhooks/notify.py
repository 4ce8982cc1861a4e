"""Sending the outbox's job webhooks: at once when a job ends, and after a restart on every sweep.

The delivery row was written with the job's final state (core.webhooks.outbox). The
process that ended the job calls `notify_job_finished` to make the attempts right away
in a background thread, so neither training nor a request waits for a receiver;
every worker's sweep calls `dispatch_due`, which resumes deliveries whose sender
stopped (a restart, a crash) once their next attempt is due. Both go through the
same claimed attempts, so running both at once never sends an attempt twice.
Nothing here raises: a webhook problem must not change how a job ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.settings import Settings
from core.webhooks import outbox
from core.webhooks.delivery import FIRST_BACKOFF_SECONDS, MAX_ATTEMPTS, attempt, backoff_seconds, http_client

log = logging.getLogger(__name__)

#: Deliveries this process sends at once at most; the rest wait for a later sweep.
MAX_SENDERS = 16

_lock = threading.Lock()
_active: set[str] = set()


def run_delivery(
    settings: Settings,
    delivery_id: str,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    first_backoff: float = FIRST_BACKOFF_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Make the delivery's attempts until it ends; its final status, or None when another process has it."""
    with http_client() as client:
        while True:
            claimed = outbox.claim_attempt(settings, delivery_id)
            if claimed is None:
                return None
            made, final = attempt(client, claimed.delivery, claimed.number)
            status = outbox.record_attempt(
                settings, claimed, made, final=final, max_attempts=max_attempts, first_backoff=first_backoff
            )
            outcome = made.error or f"HTTP {made.status}"
            if status == outbox.DELIVERED:
                log.info("webhook %s delivered (attempt %d)", delivery_id, claimed.number)
                return status
            if status == outbox.FAILED:
                log.warning(
                    "webhook %s not delivered after %d attempt(s): %s", delivery_id, claimed.number, outcome
                )
                return status
            log.info("webhook %s attempt %d failed (%s); retrying", delivery_id, claimed.number, outcome)
            sleep(backoff_seconds(claimed.number, first_backoff) + 0.01)


def _run_logged(settings: Settings, delivery_id: str) -> None:
    try:
        run_delivery(settings, delivery_id)
    except Exception:
        log.exception("webhook %s could not be sent; the next sweep tries again", delivery_id)
    finally:
        with _lock:
            _active.discard(delivery_id)


def _start(settings: Settings, delivery_id: str) -> threading.Thread | None:
    with _lock:
        if delivery_id in _active or len(_active) >= MAX_SENDERS:
            return None
        _active.add(delivery_id)
    thread = threading.Thread(
        target=_run_logged, args=(settings, delivery_id), name=f"webhook-{delivery_id}", daemon=True
    )
    thread.start()
    return thread


def notify_job_finished(settings: Settings, job_id: str) -> threading.Thread | None:
    """Send the webhook of a job that just ended, if it has one; the sending thread, for tests."""
    try:
        delivery_id = outbox.delivery_of_job(settings, job_id)
        if delivery_id is None:
            return None
        log.info("sending webhook %s for job %s", delivery_id, job_id)
        return _start(settings, delivery_id)
    except Exception:
        log.exception("the webhook of job %s could not be started; the next sweep sends it", job_id)
        return None


def dispatch_due(settings: Settings) -> list[threading.Thread]:
    """Start the deliveries whose next attempt is due and that no live process is making."""
    threads = []
    for delivery_id in outbox.due_deliveries(settings):
        thread = _start(settings, delivery_id)
        if thread is not None:
            threads.append(thread)
    return threads
