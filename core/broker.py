"""The Celery application (client side and worker configuration), sending, and queue depth.

The API only ever sends a job id; the database holds the job. The worker imports
`celery_app()` from here so both sides share one configuration: late acks, one
prefetched task per process, JSON only, and one named queue.

Every send has a deadline (`broker_send_timeout_seconds`): it runs in a small pool of
sender threads and the caller stops waiting when the deadline passes, while the
socket timeouts of the transport make the stuck thread give up soon after. A broker
that just failed is not tried again for a moment (`_Breaker`), so a burst of
requests during an outage fails fast instead of each waiting out the deadline.
Callers never lose a job to a failed send: the row says it has no message
(core.jobs.dispatch) and the reconciler sends it later.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from celery import Celery
from kombu import Connection
from kombu.exceptions import ChannelError

from core.settings import Settings, get_settings

RUN_JOB_TASK = "aplserve.run_job"
#: Sends (and queue-depth reads) in flight at once per process; more wait for a free sender.
SENDER_THREADS = 8
#: After a failed send, further sends fail at once for this long (or the send timeout, if shorter).
BREAKER_SECONDS = 2.0

_lock = threading.Lock()
_apps: dict[tuple[str, str], Celery] = {}
_senders = concurrent.futures.ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="broker-send")
T = TypeVar("T")


class BrokerUnavailable(Exception):
    """The broker did not take the message in time, or refused the connection."""


class _Breaker:
    """Remembers a recent failure per broker URL so that the next sends fail fast."""

    def __init__(self) -> None:
        self._open_until: dict[str, float] = {}

    def check(self, url: str) -> None:
        if time.monotonic() < self._open_until.get(url, 0.0):
            raise BrokerUnavailable("the broker failed moments ago")

    def failed(self, url: str, seconds: float) -> None:
        self._open_until[url] = time.monotonic() + seconds

    def succeeded(self, url: str) -> None:
        self._open_until.pop(url, None)


_breaker = _Breaker()

#: How long SQLite waits for its file lock by itself (the embedded broker's `timeout`).
SQLITE_BUSY_TIMEOUT_S = 30.0


def send_deadline(settings: Settings) -> float:
    """How long a send may take before the broker counts as unavailable.

    The configured timeout guards against a server that hangs (a stopped Redis). The
    embedded broker is a local SQLite file that cannot hang that way: it is only busy, and
    SQLite itself waits up to SQLITE_BUSY_TIMEOUT_S for its lock, so giving up earlier
    would refuse a job (503) that a loaded machine was about to queue.
    """
    if "sqlite" in settings.resolved_broker_url:
        return max(settings.broker_send_timeout_seconds, SQLITE_BUSY_TIMEOUT_S)
    return settings.broker_send_timeout_seconds


def transport_options(settings: Settings) -> dict[str, Any]:
    """Options for the configured transport.

    kombu's SQLAlchemy transport passes its options to `create_engine`, so it gets
    only the SQLite timeout; Redis gets the visibility timeout, which must exceed
    the longest job or a running task would be delivered a second time.
    """
    url = settings.resolved_broker_url
    if url.startswith(("sqla+", "sqlalchemy+")):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if "sqlite" in url else {}
    if url.startswith(("redis", "rediss")):
        # Socket timeouts bound how long a sender thread stays stuck on a hung server.
        timeout = settings.broker_send_timeout_seconds
        return {
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
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


def _within_deadline(settings: Settings, call: Callable[[], T]) -> T:
    """Run `call` on a sender thread; BrokerUnavailable when it fails or outlives the send timeout."""
    url = settings.resolved_broker_url
    timeout = send_deadline(settings)
    _breaker.check(url)
    future = _senders.submit(call)
    try:
        result = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        _breaker.failed(url, min(BREAKER_SECONDS, timeout))
        raise BrokerUnavailable(f"the broker did not answer within {timeout:g} s") from None
    except Exception as error:
        _breaker.failed(url, min(BREAKER_SECONDS, timeout))
        raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error
    _breaker.succeeded(url)
    return result


def device_queue(settings: Settings, devices: int) -> str:
    """The queue of jobs that need `devices` devices: the named queue for one, a queue per count above.

    A worker with N devices consumes the queues of 1..N devices (`worker_queues`), so a job
    reaches only a worker that can run it, and a one-device job's queue is what it always was.
    """
    return settings.queue_name if devices <= 1 else f"{settings.queue_name}.devices-{devices}"


def worker_queues(settings: Settings, devices: int) -> list[str]:
    """The queues a worker with `devices` devices consumes."""
    return [device_queue(settings, n) for n in range(1, devices + 1)]


def _publish(job_ids: Sequence[str], settings: Settings, queues: Mapping[str, str]) -> None:
    app = celery_app(settings)
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            app.send_task(
                RUN_JOB_TASK,
                args=[job_id],
                queue=queues.get(job_id, settings.queue_name),
                producer=producer,
                retry=True,
                retry_policy={
                    "max_retries": 1,
                    "interval_start": 0.0,
                    "interval_step": 0.2,
                    "interval_max": 0.2,
                },
            )


def send_jobs(job_ids: Sequence[str], settings: Settings, queues: Mapping[str, str] | None = None) -> None:
    """Send the run-job task of each job (only its id), in order, within the send timeout.

    `queues` maps a job to its device queue (`device_queue`); a job not in it goes to the named queue.

    Raises BrokerUnavailable when the broker cannot take them in time; some may have
    been sent by then (a duplicate is harmless: the worker's claim is conditional).
    Callers go through core.jobs.dispatch, which keeps the rows' outbox marks right.
    """
    if job_ids:
        _within_deadline(settings, lambda: _publish(list(job_ids), settings, queues or {}))


def enqueue_job(job_id: str, settings: Settings | None = None) -> None:
    """Send one job's message (tests and tools; services use core.jobs.dispatch)."""
    send_jobs([job_id], settings or get_settings())


def _count_waiting(settings: Settings, queues: Sequence[str]) -> int:
    total = 0
    with Connection(
        settings.resolved_broker_url,
        connect_timeout=settings.broker_send_timeout_seconds,
        transport_options=transport_options(settings),
    ) as connection:
        for queue in queues:
            # A channel per queue: an AMQP broker closes the channel that asked for a missing queue.
            with connection.channel() as channel:
                try:
                    _, count, _ = channel.queue_declare(queue=queue, passive=True)
                except ChannelError:  # no such queue: Redis drops an empty list, FLUSHALL drops everything
                    continue
                total += int(count)
    return total


def waiting_messages(settings: Settings, queues: Sequence[str] = ()) -> int:
    """How many messages wait in these job queues (default the named one; unacknowledged ones not counted)."""
    names = list(queues) or [settings.queue_name]
    return _within_deadline(settings, lambda: _count_waiting(settings, names))


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
