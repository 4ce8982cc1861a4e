"""Jobs: validation and creation, listing, cancel, metric series, snapshots for events.

A job is inserted as `queued` and committed before its id goes to the broker, so a
worker never receives an id it cannot find. `create` is the one way jobs are made
(POST /v1/jobs, and sweeps for their children, made with `send=False` and sent
together): it checks the owner's quota, commits, and sends through core.jobs.dispatch,
whose outbox mark and reconciler make sure the job reaches a worker even when the
broker fails now or loses the message later. The worker claims it with a conditional
UPDATE (queued -> running); cancelling a queued job uses the same kind of UPDATE, so
exactly one of the two wins.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import quotas, schemas
from api.services import idempotency
from api.services.pagination import Page, id_starts_with, paginate
from apl.catalog import UnknownBaseModel, check_base_model
from apl.spec import JobSpec
from core import workers
from core.broker import BrokerUnavailable
from core.db.models import Dataset, Job, MetricPoint, new_id
from core.errors import AppError, not_found
from core.jobs import dispatch, document, lifecycle
from core.jobs.status import FINAL_STATUSES, JobStatus
from core.settings import Settings
from core.webhooks.destinations import literal_refusal
from core.webhooks.notify import notify_job_finished

log = logging.getLogger(__name__)

#: Samples a job must keep for training and validation once its test split is held out.
MIN_SAMPLES_AFTER_TEST = 3


def _unprocessable(code: str, loc: list[str | int], message: str) -> AppError:
    return AppError(422, code, message, errors=[{"loc": loc, "msg": message}])


def _owned(owner_id: str, job_id: str) -> tuple[ColumnElement[bool], ...]:
    """The rows of the caller's job: another owner's id reads as missing (404, never 403)."""
    return Job.id == job_id, Job.owner_id == owner_id


def get_owned(session: Session, owner_id: str, job_id: str) -> Job:
    """The caller's job; another owner's id reads as missing (404, never 403)."""
    row = session.scalar(select(Job).where(*_owned(owner_id, job_id)))
    if row is None:
        raise not_found("job")
    return row


def require_owned(session: Session, owner_id: str, job_id: str) -> None:
    """404 unless the caller owns the job, reading nothing else of it (the metric series' check)."""
    if session.scalar(select(Job.id).where(*_owned(owner_id, job_id))) is None:
        raise not_found("job")


def document_owned(session: Session, owner_id: str, job_id: str) -> schemas.Job:
    """The caller's job as its document, from the document columns only (see `to_schemas`)."""
    row = session.execute(select(*document.COLUMNS).where(*_owned(owner_id, job_id))).one_or_none()
    if row is None:
        raise not_found("job")
    return to_schemas(session, [row])[0]


def _replay(
    existing: Job, spec_json: dict[str, Any], name: str | None, metadata: dict[str, str] | None
) -> Job:
    same = existing.spec == spec_json and (existing.name, existing.job_metadata) == (name, metadata)
    return idempotency.replay(existing, same, "job spec")


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
        # Refused now rather than as a failed job after its wait in the queue.
        base_model = check_base_model(spec.base_model, allow_download=allow_download)
    except UnknownBaseModel as exc:
        raise _unprocessable("unknown_base_model", ["body", "base_model"], str(exc)) from None
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


def _check_partial_labels(settings: Settings, spec: JobSpec, dataset: Dataset) -> None:
    """Refuse a job whose training split leaves a label unknown on every sample (422, naming it).

    Only partially labelled datasets need it; the split is the worker's own (`apl.data.job_split`,
    the same seed and fractions), so what is refused here is exactly what would train on nothing.
    """
    if not dataset.unknown_cells:
        return
    from apl.data import job_split, load_stored_dataset, unannotated_labels

    hp = spec.hyperparameters
    directory = settings.storage.dataset_dir(dataset.id)
    if directory is None:  # its files are gone: the worker fails the job with dataset_unreadable
        return
    stored = load_stored_dataset(directory)
    train, _, _ = job_split(stored.targets, hp.val_fraction, hp.seed, spec.test_fraction)
    blank = [stored.labels[j] for j in unannotated_labels(stored.targets, train)]
    if blank:
        names = ", ".join(repr(name) for name in blank[:5]) + (
            f" and {len(blank) - 5} more" if len(blank) > 5 else ""
        )
        raise _unprocessable(
            "label_unknown_in_training",
            ["body", "dataset_id"],
            f"label {names} is unknown on every sample of the training split (seed {hp.seed}); "
            "nothing could be learned for it. Annotate it on more samples, or upload the dataset without it",
        )


def _earlier(
    session: Session,
    owner_id: str,
    idempotency_key: str | None,
    spec_json: dict[str, Any],
    name: str | None,
    metadata: dict[str, str] | None,
) -> Job | None:
    """The job an Idempotency-Key already made for this owner (409 if for another spec), else None."""
    idempotency.check_key(idempotency_key)
    existing = idempotency.earlier(session, Job, owner_id, idempotency_key)
    return None if existing is None else _replay(existing, spec_json, name, metadata)


def create(
    session: Session,
    owner_id: str,
    spec: JobSpec,
    idempotency_key: str | None,
    *,
    settings: Settings,
    send: bool = True,
    name: str | None = None,
    metadata: dict[str, str] | None = None,
    sweep_id: str | None = None,
    role: str | None = None,
) -> tuple[Job, bool]:
    """Validate, count against the owner's quota, insert a queued job with its first history entry,
    commit, send. Returns (job, created).

    With an Idempotency-Key already used by this owner for the same spec (and the same
    name and metadata), the
    existing job comes back with created=False and nothing new is queued (a replayed
    job that still has no message is sent again, quietly). When the broker cannot take
    the message, the job stays committed and this raises 503 `broker_unavailable`
    naming it; the reconciler sends it later. Callers making many jobs at once pass
    `send=False` and call `send_created` once for all of them.
    """
    spec_json = spec.model_dump(mode="json")
    existing = _earlier(session, owner_id, idempotency_key, spec_json, name, metadata)
    if existing is not None:
        return _replayed(session, settings, existing, send), False
    dataset = check_spec(
        session, owner_id, spec, settings.allow_model_download, settings.webhook_allow_private_addresses
    )
    _check_partial_labels(settings, spec, dataset)
    # Refused now when no live worker has the devices; the reason it waits when all that do are busy.
    waits_for = workers.check_devices(session, settings, spec.hyperparameters.devices)
    quotas.lock_owner(session, owner_id)
    job = Job(
        id=new_id(),
        owner_id=owner_id,
        name=name,
        job_metadata=metadata,
        dataset_id=dataset.id,
        status=JobStatus.QUEUED,
        spec=spec_json,
        progress={"epoch": 0, "epochs": spec.hyperparameters.epochs or 0, "step": 0, "steps": 0},
        cancel_requested=False,
        attempts=0,
        idempotency_key=idempotency_key,
        sweep_id=sweep_id,
        test_dataset_id=spec.test_dataset_id,
        role=role,
    )
    session.add(job)
    try:
        session.flush()  # the row first: the history entry refers to it
        lifecycle.record_queued(session, job.id, waits_for)
        quotas.check_active_jobs(session, owner_id, settings)  # counts the new job too
        session.commit()
    except AppError:
        session.rollback()
        raise
    except IntegrityError:
        # The same key arrived twice at once; the other request's job is the answer.
        session.rollback()
        existing = idempotency.earlier(session, Job, owner_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, spec_json, name, metadata), False
    if send:
        send_created(session, settings, [job.id])
    return job, True


def send_created(session: Session, settings: Settings, job_ids: list[str]) -> None:
    """Send committed queued jobs; 503 `broker_unavailable` (they stay queued) when the broker fails."""
    try:
        dispatch.send(session, settings, job_ids)
    except BrokerUnavailable as error:
        log.warning(
            "could not send job(s) %s to the broker (%s); the reconciler will", ", ".join(job_ids), error
        )
        first = job_ids[0]
        raise AppError(
            503,
            "broker_unavailable",
            "the job queue is unavailable right now; the job is saved and will be queued as soon as it "
            "is back (retrying with the same Idempotency-Key returns it)",
            headers={"Retry-After": "5", "Location": f"/v1/jobs/{first}"},
            extra={"job_id": first, "job_ids": job_ids},
        ) from None


def unsent(job: Job) -> bool:
    """Whether the job is queued without a message (new, or a replay whose send failed)."""
    return job.status == JobStatus.QUEUED and job.sent_at is None


def send_one(session: Session, settings: Settings, job_id: str, *, replayed: bool) -> None:
    """Send a committed job: 503 for a new one when the broker fails, quietly retried for a replay.

    A replay answers with the saved job either way (the reconciler sends it later); only the
    request that made the job learns that its queue is down.
    """
    if not replayed:
        send_created(session, settings, [job_id])
        return
    with contextlib.suppress(BrokerUnavailable):  # still saved; the reconciler sends it
        dispatch.send(session, settings, [job_id])


def _replayed(session: Session, settings: Settings, job: Job, send: bool) -> Job:
    if send and unsent(job):
        send_one(session, settings, job.id, replayed=True)
        session.refresh(job)
    return job


def to_schema(session: Session, row: Job) -> schemas.Job:
    return to_schemas(session, [row])[0]


def to_schemas(session: Session, rows: Sequence[document.DocumentFields]) -> list[schemas.Job]:
    """Job documents for a page of rows (Job rows or rows of document.COLUMNS).

    The queue positions come in one query and the specs from the parse cache (a Job row's
    own, one query for the other rows not in it), so a page costs the same one to three
    queries however long it is.
    """
    positions = lifecycle.queue_positions(session, [row.id for row in rows if row.status == JobStatus.QUEUED])
    specs = document.specs(session, [row.id for row in rows if not isinstance(row, Job)])
    return [document.job_from_row(row, positions.get(row.id), specs.get(row.id)) for row in rows]


def list_owned(
    session: Session,
    owner_id: str,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
    id_prefix: str | None = None,
    sweep_id: str | None = None,
    dataset_id: str | None = None,
) -> Page[Row[Any]]:
    """A page of the owner's jobs as rows of document.COLUMNS, for `to_schemas`."""
    statement = select(*document.COLUMNS).where(Job.owner_id == owner_id)
    if status is not None:
        statement = statement.where(Job.status == status)
    if sweep_id is not None:
        statement = statement.where(Job.sweep_id == sweep_id)
    if dataset_id is not None:
        statement = statement.where(Job.dataset_id == dataset_id)
    if id_prefix is not None:
        statement = statement.where(id_starts_with(Job.id, id_prefix))
    return paginate(session, statement, Job, limit=limit, cursor=cursor)


def cancel(session: Session, owner_id: str, job_id: str, *, settings: Settings) -> Job:
    """Cancel a job: a queued one ends now, a running one is flagged for the worker; commits."""
    job = get_owned(session, owner_id, job_id)
    if job.status == JobStatus.QUEUED:
        ended = lifecycle.cancel_queued(session, job.id)
        session.refresh(job)  # when not ended, a worker claimed it meanwhile: it is running now
        if ended:
            notify_job_finished(settings, job.id)  # never raises; in the background
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


#: What a MetricPoint document shows of its row: the columns named as its fields.
POINT_COLUMNS = tuple(getattr(MetricPoint, name) for name in schemas.MetricPoint.model_fields)


def owned_metric_series(session: Session, owner_id: str, job_id: str) -> list[schemas.MetricPoint]:
    """The caller's job's metric points in training order; 404 when the job is not theirs.

    One query (the points joined to their owned job) where the series has points; a job
    with none yet needs a second to tell it from a missing one. Plain rows, not
    MetricPoint objects: dashboards poll this.
    """
    rows = session.execute(
        select(*POINT_COLUMNS)
        .join(Job, Job.id == MetricPoint.job_id)
        .where(MetricPoint.job_id == job_id, Job.owner_id == owner_id)  # the points' index
        .order_by(MetricPoint.epoch, MetricPoint.step, MetricPoint.id)
    ).all()
    if not rows:
        require_owned(session, owner_id, job_id)
    return [point_to_schema(row) for row in rows]


def point_to_schema(row: MetricPoint | Row[Any]) -> schemas.MetricPoint:
    return schemas.MetricPoint.model_validate(row, from_attributes=True)
