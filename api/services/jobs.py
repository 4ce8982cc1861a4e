"""Jobs: validation and creation, listing, cancel, metric series, snapshots for events.

A job is inserted as `queued` and committed before its id goes to the broker, so a
worker never receives an id it cannot find. The worker claims it with a
conditional UPDATE (queued -> running); cancelling a queued job uses the same kind
of UPDATE, so exactly one of the two wins.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import schemas
from api.services.pagination import Page, paginate
from apl.catalog import UnknownBaseModel, resolve_base_model
from apl.spec import JobSpec
from core.broker import enqueue_job
from core.db.models import Dataset, Job, MetricPoint
from core.errors import AppError
from core.jobs import document, lifecycle
from core.jobs.status import FINAL_STATUSES, JobStatus
from core.settings import Settings
from core.webhooks.destinations import literal_refusal
from core.webhooks.notify import notify_job_finished

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX = 200
#: Samples a job must keep for training and validation once its test split is held out.
MIN_SAMPLES_AFTER_TEST = 3


def _unprocessable(code: str, loc: list[str | int], message: str) -> AppError:
    return AppError(422, code, message, errors=[{"loc": loc, "msg": message}])


def get_owned(session: Session, owner_id: str, job_id: str) -> Job:
    row = session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner_id))
    if row is None:
        raise AppError(404, "not_found", "job was not found")
    return row


def _by_idempotency_key(session: Session, owner_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def _replay(existing: Job, spec_json: dict[str, Any]) -> Job:
    if existing.spec != spec_json:
        raise AppError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different job spec; use a new key",
        )
    return existing


def check_spec(
    session: Session, owner_id: str, spec: JobSpec, allow_download: bool, allow_private_webhooks: bool
) -> Dataset:
    """The dataset the spec trains on, once the spec is known to be runnable."""
    if spec.webhook_url is not None and not allow_private_webhooks:
        refused = literal_refusal(str(spec.webhook_url))
        if refused is not None:
            raise _unprocessable(
                "webhook_url_refused",
                ["body", "webhook_url"],
                f"webhooks go to public addresses only: {refused} "
                "(APLSERVE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES allows others)",
            )
    try:
        base_model = resolve_base_model(spec.base_model)
    except UnknownBaseModel as exc:
        raise _unprocessable("unknown_base_model", ["body", "base_model"], str(exc)) from None
    if base_model.name.startswith("hf:") and not allow_download and not Path(base_model.source).is_dir():
        # Refused now rather than as a failed job minutes later, on a worker with no network.
        raise _unprocessable(
            "model_unavailable",
            ["body", "base_model"],
            f"'{base_model.source}' is not a model directory on the server, and this deployment "
            "does not download models (APLSERVE_ALLOW_MODEL_DOWNLOAD)",
        )
    datasets = _lock_datasets(session, owner_id, spec)
    dataset = datasets.get(spec.dataset_id)
    if dataset is None:
        raise AppError(
            404,
            "dataset_not_found",
            "the dataset in dataset_id was not found",
            errors=[{"loc": ["body", "dataset_id"], "msg": "dataset not found"}],
        )
    if base_model.modality != dataset.modality:
        raise _unprocessable(
            "modality_mismatch",
            ["body", "base_model"],
            f"base model '{base_model.name}' is for {base_model.modality} but the dataset holds "
            f"{dataset.modality} samples",
        )
    _check_test_split(spec, dataset, datasets)
    return dataset


def _lock_datasets(session: Session, owner_id: str, spec: JobSpec) -> dict[str, Dataset]:
    """The owner's datasets the spec names (training and test), locked in id order.

    The lock keeps a concurrent DELETE from removing a dataset this job is about to
    use; one query in a fixed order means two jobs naming the same two datasets the
    other way round cannot deadlock.
    """
    wanted = sorted({spec.dataset_id, *([spec.test_dataset_id] if spec.test_dataset_id else [])})
    rows = session.scalars(
        select(Dataset)
        .where(Dataset.id.in_(wanted), Dataset.owner_id == owner_id)
        .order_by(Dataset.id)
        .with_for_update()
    )
    return {row.id: row for row in rows}


def _check_test_split(spec: JobSpec, dataset: Dataset, datasets: dict[str, Dataset]) -> None:
    """A test split must be held out of training and be big enough (or be a compatible dataset)."""
    if spec.test_fraction is not None:
        held_out = round(spec.test_fraction * dataset.num_samples)
        if held_out < 1 or dataset.num_samples - held_out < MIN_SAMPLES_AFTER_TEST:
            raise _unprocessable(
                "dataset_too_small",
                ["body", "test_fraction"],
                f"a test_fraction of {spec.test_fraction:g} of {dataset.num_samples} samples leaves "
                f"{held_out} test and {dataset.num_samples - held_out} other samples; at least 1 and "
                f"{MIN_SAMPLES_AFTER_TEST} are needed",
            )
    if spec.test_dataset_id is None:
        return
    loc: list[str | int] = ["body", "test_dataset_id"]
    if spec.test_dataset_id == spec.dataset_id:
        raise _unprocessable(
            "test_dataset_not_held_out",
            loc,
            "the test dataset is the training dataset; a test split must be held out of training",
        )
    test = datasets.get(spec.test_dataset_id)
    if test is None:
        raise AppError(
            404,
            "dataset_not_found",
            "the dataset in test_dataset_id was not found",
            errors=[{"loc": loc, "msg": "dataset not found"}],
        )
    if test.modality != dataset.modality:
        raise _unprocessable(
            "modality_mismatch",
            loc,
            f"the test dataset holds {test.modality} samples, the dataset {dataset.modality}",
        )
    if list(test.labels) != list(dataset.labels):
        only_test = sorted(set(test.labels) - set(dataset.labels))[:5]
        only_train = sorted(set(dataset.labels) - set(test.labels))[:5]
        raise _unprocessable(
            "test_labels_mismatch",
            loc,
            "the test dataset must have the same labels as the dataset "
            f"(only in the test dataset: {only_test or 'none'}; only in the dataset: {only_train or 'none'})",
        )


def create(
    session: Session,
    owner_id: str,
    spec: JobSpec,
    idempotency_key: str | None,
    *,
    allow_download: bool = False,
    allow_private_webhooks: bool = False,
    sweep_id: str | None = None,
) -> tuple[Job, bool]:
    """Validate and insert a queued job; commits. Returns (job, created).

    With an Idempotency-Key already used by this owner for the same spec, the
    existing job comes back with created=False and nothing new is queued. Use
    `submit` to also send it: that is the one way a job reaches the broker.
    """
    spec_json = spec.model_dump(mode="json")
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
            raise _unprocessable(
                "invalid_idempotency_key",
                ["header", "Idempotency-Key"],
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters",
            )
        existing = _by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            return _replay(existing, spec_json), False
    dataset = check_spec(session, owner_id, spec, allow_download, allow_private_webhooks)
    job = Job(
        owner_id=owner_id,
        dataset_id=dataset.id,
        status=JobStatus.QUEUED,
        spec=spec_json,
        progress={"epoch": 0, "epochs": spec.hyperparameters.epochs, "step": 0, "steps": 0},
        cancel_requested=False,
        attempts=0,
        idempotency_key=idempotency_key,
        sweep_id=sweep_id,
        test_dataset_id=spec.test_dataset_id,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        # The same key arrived twice at once; the other request's job is the answer.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _by_idempotency_key(session, owner_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, spec_json), False
    return job, True


def submit(
    session: Session,
    owner_id: str,
    spec: JobSpec,
    idempotency_key: str | None,
    settings: Settings,
    *,
    sweep_id: str | None = None,
) -> tuple[Job, bool]:
    """Create a queued job and send it to the broker: POST /v1/jobs and every sweep child come here.

    The row is committed before its id is sent, so a worker never receives an id it
    cannot find. When the broker cannot take the message the job is removed again and
    the answer is 503, so a retry (with the same Idempotency-Key) starts cleanly.
    """
    job, created = create(
        session,
        owner_id,
        spec,
        idempotency_key,
        allow_download=settings.allow_model_download,
        allow_private_webhooks=settings.webhook_allow_private_addresses,
        sweep_id=sweep_id,
    )
    if created:
        try:
            enqueue_job(job.id, settings)
        except Exception:
            log.exception("could not send job %s to the broker", job.id)
            lifecycle.discard_unsent(session, job.id)
            raise AppError(503, "broker_unavailable", "the job queue is unavailable; retry later") from None
    return job, created


def to_schema(session: Session, row: Job) -> schemas.Job:
    return to_schemas(session, [row])[0]


def to_schemas(session: Session, rows: list[Job]) -> list[schemas.Job]:
    """Job documents for a page of rows, their queue positions in one query."""
    positions = lifecycle.queue_positions(session, [row.id for row in rows if row.status == JobStatus.QUEUED])
    return [document.job_from_row(row, positions.get(row.id)) for row in rows]


def list_owned(
    session: Session,
    owner_id: str,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
    sweep_id: str | None = None,
) -> Page[Job]:
    statement = select(Job).where(Job.owner_id == owner_id)
    if status is not None:
        statement = statement.where(Job.status == status)
    if sweep_id is not None:
        statement = statement.where(Job.sweep_id == sweep_id)
    return paginate(session, statement, Job, limit=limit, cursor=cursor)


def cancel(session: Session, owner_id: str, job_id: str, *, allow_private_webhooks: bool = False) -> Job:
    """Cancel a job: a queued one ends now, a running one is flagged for the worker; commits."""
    job = get_owned(session, owner_id, job_id)
    if job.status == JobStatus.QUEUED:
        ended = lifecycle.cancel_queued(session, job.id)
        session.refresh(job)  # when not ended, a worker claimed it meanwhile: it is running now
        if ended:
            notify_job_finished(session, job.id, allow_private_webhooks)  # never raises; in the background
            return job
    if job.status == JobStatus.RUNNING:
        lifecycle.request_cancel(session, job.id)
        session.refresh(job)
        return job
    if job.status in FINAL_STATUSES:
        raise AppError(409, "job_finished", f"the job has already finished ({job.status}); nothing to cancel")
    raise AppError(409, "job_not_cancellable", f"a job in state '{job.status}' cannot be cancelled")


def metric_points(session: Session, job_id: str, *, after_id: int = 0) -> list[MetricPoint]:
    """A job's metric points in training order (epoch, step), optionally only newer rows."""
    return list(
        session.scalars(
            select(MetricPoint)
            .where(MetricPoint.job_id == job_id, MetricPoint.id > after_id)
            .order_by(MetricPoint.epoch, MetricPoint.step, MetricPoint.id)
        )
    )


def point_to_schema(row: MetricPoint) -> schemas.MetricPoint:
    return schemas.MetricPoint.model_validate(row, from_attributes=True)
