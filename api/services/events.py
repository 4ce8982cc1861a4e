"""A job's events: the stored history as pages, its checkpoints, and the live SSE stream.

The database is the only source of events (the worker writes it, the API reads it),
so any API process can serve any stream; the poll interval is a setting. Each poll
opens its own short session in the thread pool and returns it before the stream
sleeps, so an idle stream holds no database connection.

The stream replays the stored history after `Last-Event-ID` (all of it on a first
connection): every stored event as `history`, and for each evaluated epoch the
metric point as `metric`, both with the event's id. `status` (the whole Job, first on
every connection) and `progress` (only the fields that move: `JobProgressEvent`) come
from the job row whenever it changes. Jobs older than the stored history have
metric points without epoch events; a first connection sends those points too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.schemas import (
    Checkpoint,
    CheckpointList,
    Job,
    JobEvent,
    JobEventList,
    JobProgressEvent,
    MetricPoint,
)
from api.services import jobs
from core.db.models import JobEvent as JobEventRow
from core.db.models import MetricPoint as MetricPointRow
from core.db.session import session_factory
from core.errors import AppError
from core.jobs import history
from core.jobs.status import FINAL_STATUSES
from core.settings import Settings

#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
#: Stored events read per poll; a longer history streams over several polls, with no wait between.
POLL_BATCH = 200


def event_to_schema(row: JobEventRow) -> JobEvent:
    return JobEvent.model_validate(row, from_attributes=True)


def history_page(session: Session, owner_id: str, job_id: str, after: int, limit: int) -> JobEventList:
    """One page of the job's stored history, oldest first, after event id `after`."""
    job = jobs.get_owned(session, owner_id, job_id)
    rows = history.after(session, job.id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return JobEventList(
        job_id=job.id,
        items=[event_to_schema(row) for row in rows],
        next_after=rows[-1].id if more and rows else None,
    )


def checkpoint_list(session: Session, settings: Settings, owner_id: str, job_id: str) -> CheckpointList:
    """The epoch checkpoints the job saved (the newest save per epoch), and which one is on disk."""
    job = jobs.get_owned(session, owner_id, job_id)
    newest: dict[int, JobEventRow] = {}
    for row in history.checkpoints(session, job.id):
        newest[int(row.data["epoch"])] = row  # oldest first, so a re-saved epoch keeps its last save
    latest = max(newest.values(), key=lambda row: row.id, default=None)
    on_disk = latest is not None and settings.storage.has_checkpoint(job.id)
    final = job.best_metrics if job.best_metrics and not job.best_metrics.get("so_far") else {}
    best = final.get("best_epoch", final.get("epoch"))  # a running job's best so far marks no epoch
    metric_keys = [key for key in history.SUMMARY_FIELDS if key not in ("epoch", "step")]
    items = [
        Checkpoint(
            epoch=epoch,
            step=row.data.get("step"),
            attempt=row.data.get("attempt"),
            created_at=row.created_at,
            metrics={key: row.data.get(key) for key in metric_keys if key in row.data},
            on_disk=on_disk and row is latest,
            best=epoch == best,
        )
        for epoch, row in sorted(newest.items())
    ]
    return CheckpointList(job_id=job.id, items=items)


@dataclass
class _Poll:
    job: Job
    #: Stored events after the cursor, each with the metric point of its epoch when it is one.
    events: list[tuple[JobEvent, MetricPoint | None]]
    #: Metric points of a job from before the stored history (first connection only).
    legacy_points: list[MetricPoint]


def _poll(settings: Settings, owner_id: str, job_id: str, cursor: int, first: bool) -> _Poll:
    """The job row first, then its events: everything committed with the status read is in the events."""
    with session_factory(settings)() as session:
        job = jobs.document_owned(session, owner_id, job_id)
        stored = history.after(session, job.id, cursor, POLL_BATCH)
        epochs = {
            int(event.data["epoch"]) for event in stored if event.type == "epoch" and "epoch" in event.data
        }
        points = (
            {p.epoch: p for p in jobs.metric_points(session, job.id) if p.epoch in epochs} if epochs else {}
        )
        events = [
            (event_to_schema(event), _point(points, event) if event.type == "epoch" else None)
            for event in stored
        ]
        legacy: list[MetricPoint] = []
        if first and not history.has_epochs(session, job.id):
            legacy = [jobs.point_to_schema(point) for point in jobs.metric_points(session, job.id)]
        return _Poll(job, events, legacy)


def _point(points: dict[int, MetricPointRow], event: JobEventRow) -> MetricPoint | None:
    """The epoch's metric point now (an epoch redone after a resume has its newer point)."""
    found = points.get(int(event.data["epoch"])) if "epoch" in event.data else None
    return jobs.point_to_schema(found) if found is not None else None


def _progress_event(job: Job) -> str:
    changed = JobProgressEvent(
        id=job.id, status=job.status, progress=job.progress.model_dump(), best_metrics=job.best_metrics
    )
    return changed.model_dump_json()


def sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def stream(
    request: Request, settings: Settings, owner_id: str, job_id: str, after: int
) -> AsyncIterator[str]:
    """Replay the history after `after`, then follow the job; ends after it reaches a final state."""
    yield "retry: 2000\n\n"
    last_status: str | None = None
    last_progress: dict[str, int] | None = None
    cursor, first = after, after == 0
    next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
    while True:
        try:
            polled = await run_in_threadpool(_poll, settings, owner_id, job_id, cursor, first)
        except AppError:  # the job is gone (its owner was deleted)
            return
        first = False
        for legacy in polled.legacy_points:
            yield sse("metric", legacy.model_dump_json())
        for event, point in polled.events:
            yield sse("history", event.model_dump_json(), event.id)
            if point is not None:
                yield sse("metric", point.model_dump_json(), event.id)
            cursor = event.id
        job, progress = polled.job, polled.job.progress.model_dump()
        if job.status != last_status:
            yield sse("status", job.model_dump_json())
        elif progress != last_progress:
            yield sse("progress", _progress_event(job))
        last_status, last_progress = job.status, progress
        if len(polled.events) == POLL_BATCH:
            continue  # more stored history to send
        if job.status in FINAL_STATUSES or await request.is_disconnected():
            return
        if time.monotonic() >= next_heartbeat:
            yield ": heartbeat\n\n"
            next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        await asyncio.sleep(settings.events_poll_seconds)
