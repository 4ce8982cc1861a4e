"""/v1/jobs: submit, list, read, cancel, metric series, the event history and stream, checkpoints."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from api.deps import (
    Database,
    DatabaseDep,
    IdempotencyKeyHeader,
    IdPrefixQuery,
    OwnerDep,
    SessionDep,
    SettingsDep,
)
from api.routing import APIRouter
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
from api.state import app_state
from core.jobs.status import JobStatus

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
        "label_unknown_in_training",
        "webhook_url_refused",
        "devices_unavailable",
        "invalid_idempotency_key",
        "idempotency_key_reused",
        "quota_exceeded",
        "rate_limited",
        "broker_unavailable",
    ),
)
async def create_job(
    request: Request,
    body: JobRequest,
    response: Response,
    principal: OwnerDep,
    settings: SettingsDep,
    database: DatabaseDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Job:
    """Queue a training job. Loss presets and hyperparameter defaults are filled in.

    The job row is committed before its id is sent to the broker. When the broker
    cannot take the message within the send timeout, the answer is 503
    `broker_unavailable` with the saved job's id (`job_id`, `Location`): the job is
    kept and sent as soon as the broker is back, and a retry with the same
    Idempotency-Key returns it. 429 `quota_exceeded` when the owner already has the
    most queued and running jobs allowed.
    """
    spec = body.spec()

    def commit(session: Session) -> tuple[str, bool, bool]:
        job, created = service.create(
            session,
            principal.owner_id,
            spec,
            idempotency_key,
            settings=settings,
            name=body.name,
            metadata=body.metadata,
            send=False,
        )
        return job.id, created, service.unsent(job)

    # Three hops: the commit and the answer on the routes' threads, the wait for the broker
    # on threads of its own, so that a hung broker holds up only the requests that send.
    job_id, created, unsent = await database.run(commit)
    if unsent:
        send = partial(service.send_one, settings=settings, job_id=job_id, replayed=not created)
        await database.run(send, limiter=app_state(request.app).send_limiter)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return await _document(database, principal.owner_id, job_id)


@router.get("", response_model=JobList, responses=problem_responses(*LIST_PROBLEMS))
async def list_jobs(
    principal: OwnerDep,
    database: DatabaseDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    sweep_id: Annotated[str | None, Query(description="Only the children of this sweep.")] = None,
    dataset_id: Annotated[str | None, Query(description="Only jobs that train on this dataset.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    id_prefix: IdPrefixQuery = None,
) -> JobList:
    """The caller's jobs, newest first; a sweep's children carry its `sweep_id` and their `role`."""

    def read(session: Session) -> JobList:
        page = service.list_owned(
            session,
            principal.owner_id,
            status=status,
            limit=limit,
            cursor=cursor,
            id_prefix=id_prefix,
            sweep_id=sweep_id,
            dataset_id=dataset_id,
        )
        return JobList(items=service.to_schemas(session, page.items), next_cursor=page.next_cursor)

    return await database.run(read, read_only=True)


@router.get("/{job_id}", response_model=Job, responses=problem_responses("not_found"))
async def get_job(job_id: str, principal: OwnerDep, database: DatabaseDep) -> Job:
    return await _document(database, principal.owner_id, job_id)


async def _document(database: Database, owner_id: str, job_id: str) -> Job:
    return await database.run(
        lambda session: service.document_owned(session, owner_id, job_id), read_only=True
    )


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
    job = service.cancel(session, principal.owner_id, job_id, settings=settings)
    return service.to_schema(session, job)


@router.get("/{job_id}/metrics", response_model=MetricSeries, responses=problem_responses("not_found"))
async def job_metrics(job_id: str, principal: OwnerDep, database: DatabaseDep) -> MetricSeries:
    """Every evaluation of the job so far, ordered by epoch."""

    def read(session: Session) -> MetricSeries:
        return MetricSeries(
            job_id=job_id, series=service.owned_metric_series(session, principal.owner_id, job_id)
        )

    return await database.run(read, read_only=True)


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
    database: DatabaseDep,
    after: Annotated[int | None, Query(ge=0, description="JSON: events with a greater id only.")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_EVENTS_PAGE, description="JSON: page size.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """The job's event history (JSON, paginated) or its live event stream (SSE)."""
    if _wants_json(request, after, limit):
        page = await database.run(
            partial(
                events.history_page,
                owner_id=principal.owner_id,
                job_id=job_id,
                after=after or 0,
                limit=limit or DEFAULT_EVENTS_PAGE,
            )
        )
        return JSONResponse(page.model_dump(mode="json"))
    # 404 before streaming
    await database.run(partial(service.require_owned, owner_id=principal.owner_id, job_id=job_id))
    return StreamingResponse(
        events.stream(request, settings, principal.owner_id, job_id, _last_event_id(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


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
