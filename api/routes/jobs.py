"""/v1/jobs: submit, list, read, cancel, metric series and the live event stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep, SessionDep, SettingsDep, in_session
from api.routing import APIRouter
from api.schemas import Job, JobList, MetricSeries, problem_responses
from api.services import events
from api.services import jobs as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from apl.spec import JobSpec
from core.jobs.status import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401))


@router.post("", status_code=202, response_model=Job, responses=problem_responses(404, 409, 422, 429, 503))
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
    cannot take the message within the send timeout, the answer is 503
    `broker_unavailable` with the saved job's id (`job_id`, `Location`): the job is
    kept and sent as soon as the broker is back, and a retry with the same
    Idempotency-Key returns it. 429 `quota_exceeded` when the owner already has the
    most queued and running jobs allowed.
    """
    job, created = service.create(session, principal.owner_id, spec, idempotency_key, settings=settings)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.to_schema(session, job)


@router.get("", response_model=JobList, responses=problem_responses(400))
async def list_jobs(
    principal: OwnerDep,
    settings: SettingsDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobList:
    """The caller's jobs, newest first."""

    def read(session: Session) -> JobList:
        page = service.list_owned(session, principal.owner_id, status=status, limit=limit, cursor=cursor)
        return JobList(items=service.to_schemas(session, page.items), next_cursor=page.next_cursor)

    return await in_session(settings, read)


@router.get("/{job_id}", response_model=Job, responses=problem_responses(404))
async def get_job(job_id: str, principal: OwnerDep, settings: SettingsDep) -> Job:
    return await in_session(
        settings,
        lambda session: service.to_schema(session, service.get_owned(session, principal.owner_id, job_id)),
    )


@router.post("/{job_id}/cancel", status_code=202, response_model=Job, responses=problem_responses(404, 409))
def cancel_job(job_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep) -> Job:
    """Cancel a job: a queued job ends `cancelled` at once; a running one stops within one step.

    409 `job_finished` when the job has already ended.
    """
    job = service.cancel(session, principal.owner_id, job_id, settings=settings)
    return service.to_schema(session, job)


@router.get("/{job_id}/metrics", response_model=MetricSeries, responses=problem_responses(404))
async def job_metrics(job_id: str, principal: OwnerDep, settings: SettingsDep) -> MetricSeries:
    """Every evaluation of the job so far, ordered by epoch."""

    def read(session: Session) -> MetricSeries:
        job = service.get_owned(session, principal.owner_id, job_id)
        points = service.metric_points(session, job.id)
        return MetricSeries(job_id=job.id, series=[service.point_to_schema(point) for point in points])

    return await in_session(settings, read)


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
    await run_in_threadpool(events.check_owned, settings, principal.owner_id, job_id)  # 404 before streaming
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() and len(last_event_id) < 10 else 0
    return StreamingResponse(
        events.stream(request, settings, principal.owner_id, job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
