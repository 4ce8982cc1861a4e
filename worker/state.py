"""Every change the worker makes to a job's row, each in its own short transaction.

The database is the single source of truth: these conditional UPDATEs are what
make a redelivered task a no-op (the claim), let a sweeper take back a job whose
worker died (the lease) and let cancel win over a late success.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from api.db.models import Dataset, Job, MetricPoint, Model, utcnow
from api.db.session import session_scope
from api.settings import Settings


@dataclass(frozen=True)
class ClaimedJob:
    """What the runner needs of a job once it owns it."""

    id: str
    owner_id: str
    dataset_id: str | None
    spec: dict[str, Any]
    attempts: int
    dataset_modality: str | None


def claim(job_id: str, settings: Settings) -> ClaimedJob | None:
    """queued -> running, only if still queued; None when someone else has it or it ended."""
    now = utcnow()
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
            .values(
                status="running",
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=now + timedelta(seconds=settings.job_lease_seconds),
                attempts=Job.attempts + 1,
                error_code=None,
                error_message=None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = session.get_one(Job, job_id)
        modality = None
        if job.dataset_id is not None:
            dataset = session.get(Dataset, job.dataset_id)
            modality = dataset.modality if dataset is not None else None
        return ClaimedJob(job.id, job.owner_id, job.dataset_id, dict(job.spec), job.attempts, modality)


def heartbeat(job_id: str, settings: Settings) -> bool:
    """Extend the lease; False when the job is no longer ours to run (swept or finished)."""
    now = utcnow()
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=settings.job_lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel_requested(job_id: str, settings: Settings) -> bool:
    with session_scope(settings) as session:
        value = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
        return bool(value)


def set_progress(job_id: str, progress: dict[str, int], settings: Settings) -> None:
    with session_scope(settings) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(progress=progress)
            .execution_options(synchronize_session=False)
        )


def add_metric_point(job_id: str, point: dict[str, Any], settings: Settings) -> None:
    """Store one evaluation; a resumed job replaces the point of an epoch it repeats."""
    with session_scope(settings) as session:
        existing = session.scalars(
            select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.epoch == point["epoch"])
        ).all()
        for row in existing:
            session.delete(row)
        session.add(MetricPoint(job_id=job_id, **point))


def finish_succeeded(
    job_id: str,
    model: dict[str, Any],
    best_metrics: dict[str, Any],
    settings: Settings,
) -> bool:
    """Insert the Model row and mark the job succeeded in one transaction."""
    now = utcnow()
    with session_scope(settings) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status != "running":
            return False
        row = Model(job_id=job_id, owner_id=job.owner_id, **model)
        session.add(row)
        session.flush()
        job.status = "succeeded"
        job.model_id = row.id
        job.best_metrics = best_metrics
        job.finished_at = now
        job.lease_expires_at = None
        return True


def finish(
    job_id: str, status: str, settings: Settings, code: str | None = None, message: str | None = None
) -> None:
    """End a running job as failed or cancelled (never overwrites a terminal state)."""
    with session_scope(settings) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(
                status=status,
                error_code=code,
                error_message=message,
                finished_at=utcnow(),
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class SweepResult:
    requeued: list[str]
    failed: list[str]


def sweep_expired(settings: Settings, now: datetime | None = None) -> SweepResult:
    """Take back running jobs whose lease expired: re-queue them, or fail them past the retry limit.

    Each job is moved by a conditional UPDATE on its expired lease, so two sweepers
    (two workers) never both re-queue the same job.
    """
    now = now or utcnow()
    requeued: list[str] = []
    failed: list[str] = []
    with session_scope(settings) as session:
        lost = session.execute(
            select(Job.id, Job.attempts, Job.cancel_requested).where(
                Job.status == "running", Job.lease_expires_at < now
            )
        ).all()
        for job_id, attempts, cancel in lost:
            expired = (Job.id == job_id, Job.status == "running", Job.lease_expires_at < now)
            if cancel:
                values: dict[str, Any] = {"status": "cancelled", "finished_at": now, "lease_expires_at": None}
                target = None
            elif attempts >= settings.job_max_attempts:
                values = {
                    "status": "failed",
                    "finished_at": now,
                    "lease_expires_at": None,
                    "error_code": "worker_lost",
                    "error_message": f"the worker running this job stopped responding {attempts} times; "
                    "giving up",
                }
                target = failed
            else:
                values = {"status": "queued", "lease_expires_at": None}
                target = requeued
            result = session.execute(
                update(Job).where(*expired).values(**values).execution_options(synchronize_session=False)
            )
            if result.rowcount == 1 and target is not None:  # type: ignore[attr-defined]
                target.append(job_id)
    return SweepResult(requeued, failed)
