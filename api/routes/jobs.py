"""/v1/jobs: submit, list, read, cancel, metric series, the event history and stream, checkpoints."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import IdPrefixQuery, OwnerDep, SessionDep, SettingsDep
from api.schemas import (
    LIST_PROBLEMS,
    CheckpointList,
    Job,
    JobEventList,
    JobList,
    JobRequest,
    MetricSeries,
    problem_responses,
)
from api.services import events
from api.services import jobs as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from core.broker import enqueue_job
from core.db.session import session_factory
from core.errors import AppError
from core.jobs import lifecycle
from core.jobs.status import JobStatus
from core.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses("unauthorized"))

DEFAULT_EVENTS_PAGE = 100
MAX_EVENTS_PAGE = 500


@router.post(
    "",
    status_code=202,
    response_model=Job,
    responses=problem_responses(
        "validation_error",
        "dataset_not_found",
        "unknown_base_model",
        "modality_mismatch",
        "webhook_url_refused",
        "invalid_idempotency_key",
        "idempotency_key_reused",
        "broker_unavailable",
    ),
)
def create_job(
    body: JobRequest,
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
        body.spec(),
        idempotency_key,
        allow_download=settings.allow_model_download,
        allow_private_webhooks=settings.webhook_allow_private_addresses,
        name=body.name,
        metadata=body.metadata,
    )
    if created:
        try:
            enqueue_job(job.id, settings)
        except Exception:
            log.exception("could not send job %s to the broker", job.id)
            lifecycle.discard_unsent(session, job.id)
            raise AppError(503, "broker_unavailable", "the job queue is unavailable; retry later") from None
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.to_schema(session, job)


@router.get("", response_model=JobList, responses=problem_responses(*LIST_PROBLEMS))
def list_jobs(
    principal: OwnerDep,
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    id_prefix: IdPrefixQuery = None,
) -> JobList:
    """The caller's jobs, newest first."""
    page = service.list_owned(
        session, principal.owner_id, status=status, limit=limit, cursor=cursor, id_prefix=id_prefix
    )
    return JobList(items=service.to_schemas(session, page.items), next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=Job, responses=problem_responses("not_found"))
def get_job(job_id: str, principal: OwnerDep, session: SessionDep) -> Job:
    return service.to_schema(session, service.get_owned(session, principal.owner_id, job_id))


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=Job,
    responses=problem_responses("not_found", "job_finished", "job_not_cancellable"),
)
def cancel_job(job_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep) -> Job:
    """Cancel a job: a queued job ends `cancelled` at once; a running one stops within one step.

    409 `job_finished` when the job has already ended.
    """
    allow_private = settings.webhook_allow_private_addresses
    job = service.cancel(session, principal.owner_id, job_id, allow_private_webhooks=allow_private)
    return service.to_schema(session, job)


@router.get("/{job_id}/metrics", response_model=MetricSeries, responses=problem_responses("not_found"))
def job_metrics(job_id: str, principal: OwnerDep, session: SessionDep) -> MetricSeries:
    """Every evaluation of the job so far, ordered by epoch."""
    job = service.get_owned(session, principal.owner_id, job_id)
    points = service.metric_points(session, job.id)
    return MetricSeries(job_id=job.id, series=[service.point_to_schema(point) for point in points])


EVENTS_DESCRIPTION = (
    "Two views of the job's events. **JSON** (when `Accept` prefers `application/json`, or `after` / "
    "`limit` is given): a page of the stored history, oldest first. **Server-sent events** (otherwise, "
    "e.g. a plain request or `Accept: text/event-stream`): the stored history replayed after "
    "`Last-Event-ID` (all of it on a first connection), then the job live until it ends: `history` (each "
    "stored event), `metric` (the MetricPoint of each evaluated epoch; it carries its event's id), "
    "`status` (the Job, on each status change) and `progress` (the Job, when progress moves)."
)


def _wants_json(request: Request, after: int | None, limit: int | None) -> bool:
    if after is not None or limit is not None:
        return True
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/event-stream" not in accept


def _last_event_id(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 16 else 0


@router.get(
    "/{job_id}/events",
    response_model=None,
    description=EVENTS_DESCRIPTION,
    responses={
        200: {
            "model": JobEventList,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "The history page (JSON) or the event stream.",
        },
        **problem_responses("not_found", "validation_error"),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    principal: OwnerDep,
    settings: SettingsDep,
    after: Annotated[int | None, Query(ge=0, description="JSON: events with a greater id only.")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_EVENTS_PAGE, description="JSON: page size.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """The job's event history (JSON, paginated) or its live event stream (SSE)."""
    if _wants_json(request, after, limit):
        page = await run_in_threadpool(
            _history_page, settings, principal.owner_id, job_id, after or 0, limit or DEFAULT_EVENTS_PAGE
        )
        return JSONResponse(page.model_dump(mode="json"))
    await run_in_threadpool(events.check_owned, settings, principal.owner_id, job_id)  # 404 before streaming
    return StreamingResponse(
        events.stream(request, settings, principal.owner_id, job_id, _last_event_id(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _history_page(settings: Settings, owner_id: str, job_id: str, after: int, limit: int) -> JobEventList:
    with session_factory(settings)() as session:
        return events.history_page(session, owner_id, job_id, after, limit)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList, responses=problem_responses("not_found"))
def job_checkpoints(
    job_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep
) -> CheckpointList:
    """The epoch checkpoints the job saved, with each epoch's metrics.

    A running job keeps only its newest checkpoint on disk (`on_disk`), to resume
    from after a lost worker; it is deleted when the job ends, and the model keeps
    the weights of the best epoch (`best`). The list comes from the job's history,
    so it also shows the checkpoints that were overwritten.
    """
    return events.checkpoint_list(session, settings, principal.owner_id, job_id)
