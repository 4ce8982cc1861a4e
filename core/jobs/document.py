"""The Job document: what GET /v1/jobs/{id}, the event stream and webhooks show of a job row.

The API and the webhooks sent by the worker both build it here, so a job reads the
same wherever it is shown.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from datetime import datetime
from threading import Lock
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from apl.spec import JobSpec
from core.db.models import Job as JobRow
from core.jobs.status import JobStatus

_EXAMPLE_TIME = "2026-01-15T09:30:00.123456Z"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class JobProgress(BaseModel):
    model_config = _examples({"epoch": 1, "epochs": 3, "step": 40, "steps": 120})

    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0


class JobError(BaseModel):
    model_config = _examples({"code": "out_of_memory", "message": "the batch did not fit in memory"})

    code: str
    message: str


JOB_EXAMPLE: dict[str, Any] = {
    "id": "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f",
    "name": "movies-apl-baseline",
    "metadata": {"experiment": "apl-vs-bce", "owner": "ana"},
    "status": "running",
    "spec": {
        "dataset_id": "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55",
        "base_model": "minilm-l6",
        "loss": {
            "name": "apl",
            "alpha1": 0.0,
            "alpha2": 1.75,
            "beta": 1.0,
            "gamma_pos": 0.0,
            "gamma_neg": 4.0,
            "clip": 0.05,
            "detach_focal_weight": True,
        },
        "hyperparameters": {"epochs": 3, "batch_size": 32, "learning_rate": 5e-5, "seed": 0},
    },
    "created_at": _EXAMPLE_TIME,
    "started_at": "2026-01-15T09:30:02.000000Z",
    "finished_at": None,
    "progress": {"epoch": 1, "epochs": 3, "step": 40, "steps": 120},
    "best_metrics": {"map": 0.71, "micro_f1": 0.66, "macro_f1": 0.58, "epoch": 1},
    "model_id": None,
    "error": None,
    "queue_position": None,
    "cancel_requested": False,
    "attempts": 1,
    "sweep_id": None,
    "role": None,
}


class Job(BaseModel):
    model_config = _examples(JOB_EXAMPLE)

    id: str
    name: str | None = Field(default=None, description="The submitter's label for the job, if any.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="The submitter's string map (never read by training)."
    )
    status: JobStatus
    spec: JobSpec = Field(description="The submitted spec with every default and loss preset filled in.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress
    best_metrics: dict[str, Any] | None
    model_id: str | None
    error: JobError | None
    queue_position: int | None = Field(
        default=None, description="For a queued job: how many queued jobs are ahead of it (0 = next)."
    )
    cancel_requested: bool = False
    attempts: int = Field(default=0, description="How many times a worker has started this job.")
    sweep_id: str | None = Field(default=None, description="The sweep this job is a child of, if any.")
    warnings: list[str] = Field(
        default_factory=list,
        description="Problems with the result, e.g. a linear baseline that beats the fine-tuned model on "
        "validation (both numbers; best_metrics.baselines has every baseline's scores).",
    )
    role: Literal["trial", "replicate"] | None = Field(
        default=None,
        description="A sweep child's part: a search `trial` (validation only, no model) or a `replicate`.",
    )


#: The job columns a document shows, all but the spec. Reads that only build documents (a
#: job's status, the job list) select these as plain rows instead of loading Job objects, and
#: take the spec from `specs`: on the job list that is about a third of the API's CPU a
#: request less (docs/reliability.md).
COLUMNS = (
    JobRow.id,
    JobRow.name,
    JobRow.job_metadata,
    JobRow.status,
    JobRow.created_at,
    JobRow.started_at,
    JobRow.finished_at,
    JobRow.progress,
    JobRow.best_metrics,
    JobRow.model_id,
    JobRow.error_code,
    JobRow.error_message,
    JobRow.cancel_requested,
    JobRow.attempts,
    JobRow.sweep_id,
    JobRow.role,
)


class DocumentFields(Protocol):
    """What `job_from_row` reads: a Job row, or a row of `COLUMNS`."""

    id: str
    name: str | None
    job_metadata: dict[str, Any] | None
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any]
    best_metrics: dict[str, Any] | None
    model_id: str | None
    error_code: str | None
    error_message: str | None
    cancel_requested: bool
    attempts: int
    sweep_id: str | None
    role: str | None


#: How many parsed specs the cache keeps: a job list page is 20 to 200 of them.
SPEC_CACHE_SIZE = 4096
_specs: OrderedDict[str, JobSpec] = OrderedDict()
_specs_lock = Lock()


def _cached(job_id: str) -> JobSpec | None:
    with _specs_lock:
        spec = _specs.get(job_id)
        if spec is not None:
            _specs.move_to_end(job_id)
        return spec


def _parse(job_id: str, raw: dict[str, Any]) -> JobSpec:
    spec = JobSpec.model_validate(raw)
    with _specs_lock:
        _specs[job_id] = spec
        while len(_specs) > SPEC_CACHE_SIZE:
            _specs.popitem(last=False)
    return spec


def _spec_of(row: JobRow) -> JobSpec:
    """The row's spec as a JobSpec, parsed once per job rather than on every read.

    A job's spec is written once, at creation, and never updated, so the parse can be kept
    by job id. Validating it on every read (the model validators, the defaults lookup, 20
    of them for a job list page) cost the API process 2.9-3.1 ms of CPU a request on the
    status/metrics/list mix of benchmarks/api_load.py, against 2.5 ms with this cache, and
    that CPU is what bounds how many polls one process answers a second.
    """
    spec = _cached(row.id)
    return spec if spec is not None else _parse(row.id, row.spec)


def specs(session: Session, job_ids: Collection[str]) -> dict[str, JobSpec]:
    """The jobs' specs: from the cache, and the jobs not in it read in one query.

    Once a job has been shown its spec column is not read again (nor decoded from JSON).
    """
    found = {job_id: spec for job_id in job_ids if (spec := _cached(job_id)) is not None}
    missing = [job_id for job_id in job_ids if job_id not in found]
    if missing:
        rows = session.execute(select(JobRow.id, JobRow.spec).where(JobRow.id.in_(missing)))
        found.update({job_id: _parse(job_id, raw) for job_id, raw in rows})
    return found


def job_from_row(row: DocumentFields, queue_position: int | None, spec: JobSpec | None = None) -> Job:
    """The Job document of a row: what GET /v1/jobs/{id}, the event stream and webhooks show.

    `spec` is the job's (from `specs`) for a row of `COLUMNS`; a Job row may leave it out.
    """
    if spec is None:
        if not isinstance(row, JobRow):
            raise TypeError("a row of document.COLUMNS has no spec: pass the one from document.specs")
        spec = _spec_of(row)
    error = (
        JobError(code=row.error_code, message=row.error_message or row.error_code) if row.error_code else None
    )
    return Job(
        id=row.id,
        name=row.name,
        metadata=dict(row.job_metadata or {}),
        status=JobStatus(row.status),
        spec=spec,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=JobProgress.model_validate(row.progress or {}),
        best_metrics=row.best_metrics,
        model_id=row.model_id,
        error=error,
        queue_position=queue_position,
        cancel_requested=row.cancel_requested,
        attempts=row.attempts,
        sweep_id=row.sweep_id,
        warnings=list((row.best_metrics or {}).get("warnings", [])),
        role=row.role,  # type: ignore[arg-type]
    )
