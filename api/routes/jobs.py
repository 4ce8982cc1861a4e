"""/v1/jobs: submit, list, read, cancel, metric series and the live event stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep, SessionDep, SettingsDep
from api.schemas import Job, JobList, MetricSeries, problem_responses
from api.services import events
from api.services import jobs as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from apl.spec import JobSpec
from core.jobs.status import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401))


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
    job, created = service.submit(session, principal.owner_id, spec, idempotency_key, settings)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.to_schema(session, job)


@router.get("", response_model=JobList, responses=problem_responses(400))
def list_jobs(
    principal: OwnerDep,
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    sweep_id: Annotated[str | None, Query(description="Only the children of this sweep.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobList:
    """The caller's jobs, newest first."""
    page = service.list_owned(
        session, principal.owner_id, status=status, sweep_id=sweep_id, limit=limit, cursor=cursor
    )
    return JobList(items=service.to_schemas(session, page.items), next_cursor=page.next_cursor)


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
