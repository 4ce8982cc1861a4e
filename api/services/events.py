"""The job event stream: poll the job's row and metric points, emit what changed as SSE.

The database is the only source of events (the worker writes it, the API reads it),
so any API process can serve any stream; the poll interval is a setting. Each poll
opens its own short session in the thread pool and returns it before the stream
sleeps, so an idle stream holds no database connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.schemas import Job, MetricPoint
from api.services import jobs
from core.db.session import session_factory
from core.errors import AppError
from core.jobs.status import FINAL_STATUSES
from core.settings import Settings

#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0


def _poll(
    settings: Settings, owner_id: str, job_id: str, after_metric_id: int
) -> tuple[Job, list[tuple[int, MetricPoint]]]:
    with session_factory(settings)() as session:
        job = jobs.get_owned(session, owner_id, job_id)
        points = jobs.metric_points(session, job.id, after_id=after_metric_id)
        return jobs.to_schema(session, job), [(p.id, jobs.point_to_schema(p)) for p in points]


def check_owned(settings: Settings, owner_id: str, job_id: str) -> None:
    with session_factory(settings)() as session:
        jobs.get_owned(session, owner_id, job_id)


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def stream(
    request: Request, settings: Settings, owner_id: str, job_id: str, after_metric_id: int
) -> AsyncIterator[str]:
    """Poll the database and emit what changed; ends after the job reaches a final state."""
    yield "retry: 2000\n\n"
    last_status: str | None = None
    last_progress: dict[str, int] | None = None
    next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
    while True:
        try:
            job, points = await run_in_threadpool(_poll, settings, owner_id, job_id, after_metric_id)
        except AppError:  # the job is gone (its owner was deleted)
            return
        for point_id, point in points:
            yield _sse("metric", point.model_dump_json(), point_id)
            after_metric_id = point_id
        progress = job.progress.model_dump()
        if job.status != last_status:
            yield _sse("status", job.model_dump_json())
        elif progress != last_progress:
            yield _sse("progress", job.model_dump_json())
        last_status, last_progress = job.status, progress
        if job.status in FINAL_STATUSES or await request.is_disconnected():
            return
        if time.monotonic() >= next_heartbeat:
            yield ": heartbeat\n\n"
            next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        await asyncio.sleep(settings.events_poll_seconds)
