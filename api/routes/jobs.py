"""/v1/jobs: submit, list, read, cancel, metric series and the live event stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.broker import enqueue_job
from api.db.models import TERMINAL_STATUSES
from api.db.session import session_factory
from api.deps import OwnerDep, SessionDep, SettingsDep
from api.errors import AppError
from api.schemas import Job, JobList, MetricPoint, MetricSeries, problem_responses
from api.services import jobs as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.settings import Settings
from apl.spec import JobSpec

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401))

HEARTBEAT_SECONDS = 15.0
StatusFilter = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post("", status_code=202, response_model=Job, responses=problem_responses(404, 409, 422, 503))
def create_job(
    spec: JobSpec,
    response: Response,
    principal: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=service.IDEMPOTENCY_KEY_MAX,
            description="Retrying with the same key returns the job created the first time.",
        ),
    ] = None,
) -> Job:
    """Queue a training job. Loss presets and hyperparameter defaults are filled in.

    The job row is committed before its id is sent to the broker. When the broker
    cannot take the message the job is removed again and the answer is 503, so a
    retry (with the same Idempotency-Key) starts cleanly.
    """
    job, created = service.create(
        session,
        principal.owner_id,
        spec,
        idempotency_key,
        allow_download=settings.allow_model_download,
        allow_private_webhooks=settings.webhook_allow_private_addresses,
    )
    if created:
        try:
            enqueue_job(job.id, settings)
        except Exception:
            log.exception("could not send job %s to the broker", job.id)
            service.discard_unqueued(session, job.id)
            raise AppError(503, "broker_unavailable", "the job queue is unavailable; retry later") from None
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.to_schema(session, job)


@router.get("", response_model=JobList, responses=problem_responses(400))
def list_jobs(
    principal: OwnerDep,
    session: SessionDep,
    status: Annotated[StatusFilter | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobList:
    """The caller's jobs, newest first."""
    page = service.list_owned(session, principal.owner_id, status=status, limit=limit, cursor=cursor)
    return JobList(
        items=[service.to_schema(session, row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/{job_id}", response_model=Job, responses=problem_responses(404))
def get_job(job_id: str, principal: OwnerDep, session: SessionDep) -> Job:
    return service.to_schema(session, service.get_owned(session, principal.owner_id, job_id))


@router.post("/{job_id}/cancel", status_code=202, response_model=Job, responses=problem_responses(404, 409))
def cancel_job(job_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep) -> Job:
    """Cancel a job: a queued job ends `cancelled` at once; a running one stops within one step.

    409 `job_finished` when the job has already ended.
    """
    allow_private = settings.webhook_allow_private_addresses
    job = service.cancel(session, principal.owner_id, job_id, allow_private_webhooks=allow_private)
    return service.to_schema(session, job)


@router.get("/{job_id}/metrics", response_model=MetricSeries, responses=problem_responses(404))
def job_metrics(job_id: str, principal: OwnerDep, session: SessionDep) -> MetricSeries:
    """Every evaluation of the job so far, ordered by epoch."""
    job = service.get_owned(session, principal.owner_id, job_id)
    points = service.metric_points(session, job.id)
    return MetricSeries(job_id=job.id, series=[service.point_to_schema(point) for point in points])


def _poll(
    settings: Settings, owner_id: str, job_id: str, after_metric_id: int
) -> tuple[Job, list[tuple[int, MetricPoint]]]:
    with session_factory(settings)() as session:
        job = service.get_owned(session, owner_id, job_id)
        points = service.metric_points(session, job.id, after_id=after_metric_id)
        return service.to_schema(session, job), [(p.id, service.point_to_schema(p)) for p in points]


def _check_owned(settings: Settings, owner_id: str, job_id: str) -> None:
    with session_factory(settings)() as session:
        service.get_owned(session, owner_id, job_id)


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def _event_stream(
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
        if job.status in TERMINAL_STATUSES or await request.is_disconnected():
            return
        if time.monotonic() >= next_heartbeat:
            yield ": heartbeat\n\n"
            next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        await asyncio.sleep(settings.events_poll_seconds)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-sent events: `status` (the Job, on each status change), `progress` "
            "(the Job, when progress moves), `metric` (a MetricPoint; its id is the event id). The stream "
            "ends after a final status. Send Last-Event-ID to skip metric points already seen.",
        },
        **problem_responses(404),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    principal: OwnerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Live job updates as server-sent events."""
    await run_in_threadpool(_check_owned, settings, principal.owner_id, job_id)  # 404 before streaming
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() and len(last_event_id) < 10 else 0
    return StreamingResponse(
        _event_stream(request, settings, principal.owner_id, job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
