"""The Celery application (client side and worker configuration) and `enqueue_job`.

The API only ever sends a job id; the database holds the job. The worker imports
`celery_app()` from here so both sides share one configuration: late acks, one
prefetched task per process, JSON only, and one named queue.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from kombu import Connection

from core.settings import Settings, get_settings

RUN_JOB_TASK = "aplserve.run_job"

_lock = threading.Lock()
_apps: dict[tuple[str, str], Celery] = {}


def transport_options(settings: Settings) -> dict[str, Any]:
    """Options for the configured transport.

    kombu's SQLAlchemy transport passes its options to `create_engine`, so it gets
    only the SQLite timeout; Redis gets the visibility timeout, which must exceed
    the longest job or a running task would be delivered a second time.
    """
    url = settings.resolved_broker_url
    if url.startswith(("sqla+", "sqlalchemy+")):
        return {"connect_args": {"timeout": 30}} if "sqlite" in url else {}
    if url.startswith(("redis", "rediss")):
        return {"visibility_timeout": settings.broker_visibility_timeout_seconds}
    return {}


def make_celery(settings: Settings) -> Celery:
    """A Celery app for `settings`; the embedded broker's SQLite file goes in the data dir."""
    if settings.broker_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("aplserve", set_as_current=False)
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue_name,
        task_routes={RUN_JOB_TASK: {"queue": settings.queue_name}},
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        # A worker that dies mid-job puts the message back; the job row's claim makes a
        # second delivery of a job already running or finished a no-op.
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    return app


def celery_app(settings: Settings | None = None) -> Celery:
    """The process-wide Celery app for the configured broker and queue."""
    settings = settings or get_settings()
    key = (settings.resolved_broker_url, settings.queue_name)
    app = _apps.get(key)
    if app is None:
        with _lock:
            app = _apps.get(key)
            if app is None:
                app = _apps[key] = make_celery(settings)
    return app


def enqueue_job(job_id: str, settings: Settings | None = None) -> None:
    """Send the run-job task with only the job id. Raises when the broker cannot take it.

    Call it after the job row is committed, so the worker always finds the row.
    """
    settings = settings or get_settings()
    celery_app(settings).send_task(
        RUN_JOB_TASK,
        args=[job_id],
        queue=settings.queue_name,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5},
    )


def check_broker(settings: Settings, timeout: float) -> None:
    """Connect to the broker once; raises when it does not answer within `timeout` seconds."""
    with Connection(
        settings.resolved_broker_url,
        connect_timeout=timeout,
        transport_options=transport_options(settings),
    ) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        # The virtual transports (SQLAlchemy) connect lazily; opening a channel touches them.
        connection.default_channel  # noqa: B018


def close_celery_apps() -> None:
    """Release the broker connections of every cached Celery app (tests, process shutdown)."""
    with _lock:
        for app in _apps.values():
            app.close()
        _apps.clear()
