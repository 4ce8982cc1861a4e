"""The job lifecycle: every conditional UPDATE of a job's status, in one module.

The database is the single source of truth, and a job's state moves only through
the functions below, each a conditional UPDATE whose WHERE clause says which state
it moves from, so two actors racing for one job (two workers claiming a redelivered
task, a cancel against a claim, two sweepers) never both win:

    queued  --claim-->               running    (worker; attempts + 1)
    queued  --cancel_queued-->       cancelled  (API)
    running --request_cancel-->      running with cancel_requested (API; the worker stops)
    running --finish_succeeded-->    succeeded  (worker; the Model row in the same transaction)
    running --finish-->              failed | cancelled (worker)
    running --release-->             queued     (worker shutdown; the attempt is given back)
    running --sweep_expired-->       queued | failed (worker_lost) | cancelled  (lease expired)

The fencing rule: every write a worker makes after its claim carries the claim's
attempt number in its WHERE clause (`_ours`). A worker that stalled past its lease
and had its job taken back, perhaps claimed again by another worker, can then no
longer change the row, so two runs of one job never interleave.

A queued job also carries the outbox mark `sent_at` (when its message was handed to
the broker; NULL while it has none). `take_for_sending` stamps it with a conditional
UPDATE before a send, so two senders (a request and a reconciler, two workers) never
both send one job in the same round; `mark_unsent` clears it again after a failed
send. Re-queueing a job (`release`, `sweep_expired`) clears it too: its old message
is spent. core.jobs.dispatch is the one caller that sends.

The final transitions (`finish_succeeded`, `finish`, `sweep_expired`, `cancel_queued`)
record the job's webhook delivery (core.webhooks.outbox) in the same transaction, so a
webhook can never be lost between the state change and its call.

Worker-side functions open their own short transaction (each change is visible to
the API as soon as it returns); API-side ones take the request's session and commit.
Each change also appends its entry to the job's history (`core.jobs.history`) in
that same transaction, so the history shows exactly the changes that happened.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from core.db.models import Dataset, Job, MetricPoint, UTCDateTime, utcnow
from core.db.session import session_scope
from core.jobs import history
from core.jobs.status import JobStatus, RunOutcome
from core.registry import ModelRecord, insert_model
from core.settings import Settings
from core.webhooks.outbox import record_final


@dataclass(frozen=True)
class ClaimedJob:
    """What the runner needs of a job once it owns it; `attempt` fences every later write."""

    id: str
    owner_id: str
    dataset_id: str | None
    spec: dict[str, Any]
    attempt: int
    dataset_modality: str | None
    #: "trial" for a sweep's search trial (scored on validation only, keeps no model), else None.
    role: str | None = None


def _ours(job_id: str, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """The fencing rule: the row is still running under this very claim."""
    return (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)


def _lease(settings: Settings, now: datetime) -> datetime:
    return now + timedelta(seconds=settings.job_lease_seconds)


def claim(job_id: str, settings: Settings) -> ClaimedJob | None:
    """queued -> running, only if still queued; None when someone else has it or it ended.

    `started_at` keeps the first claim's time, so a resumed job reports its whole run.
    """
    now = utcnow()
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
            .values(
                status=JobStatus.RUNNING,
                started_at=func.coalesce(Job.started_at, literal(now, UTCDateTime())),
                heartbeat_at=now,
                lease_expires_at=_lease(settings, now),
                attempts=Job.attempts + 1,
                error_code=None,
                error_message=None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = session.get_one(Job, job_id)
        history.add(
            session,
            job_id,
            "status",
            f"running: attempt {job.attempts} started",
            data={"status": JobStatus.RUNNING.value, "attempt": job.attempts},
        )
        modality = None
        if job.dataset_id is not None:
            dataset = session.get(Dataset, job.dataset_id)
            modality = dataset.modality if dataset is not None else None
        return ClaimedJob(
            job.id, job.owner_id, job.dataset_id, dict(job.spec), job.attempts, modality, job.role
        )


def heartbeat(job_id: str, attempt: int, settings: Settings) -> bool:
    """Extend the lease; False when the job is no longer this attempt's to run."""
    with session_scope(settings) as session:
        return _touch(session, job_id, attempt, settings)


def cancel_requested(job_id: str, settings: Settings) -> bool:
    with session_scope(settings) as session:
        value = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
        return bool(value)


def set_progress(job_id: str, attempt: int, progress: dict[str, int], settings: Settings) -> None:
    with session_scope(settings) as session:
        session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(progress=progress)
            .execution_options(synchronize_session=False)
        )


def _touch(session: Session, job_id: str, attempt: int, settings: Settings) -> bool:
    """Refresh this attempt's lease; False when the job is no longer ours.

    Writing first also matters on SQLite: a transaction that reads before it writes
    fails at once (no busy wait) when another process committed in between.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(*_ours(job_id, attempt))
        .values(heartbeat_at=now, lease_expires_at=_lease(settings, now))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_metric_point(
    job_id: str,
    attempt: int,
    point: dict[str, Any],
    settings: Settings,
    *,
    epochs: int | None = None,
    samples_per_s: float | None = None,
) -> bool:
    """Store one evaluation and its epoch event; an epoch evaluated again after a resume replaces its point.

    The history keeps both epoch events (it records what happened); the metric series
    keeps the newest point per epoch.
    """
    with session_scope(settings) as session:
        if not _touch(session, job_id, attempt, settings):
            return False
        session.execute(
            delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.epoch == point["epoch"])
        )
        session.add(MetricPoint(job_id=job_id, **point))
        _keep_best_so_far(session, job_id, point)
        summary = history.metric_summary(point) | {"attempt": attempt, "samples_per_s": samples_per_s}
        history.add(session, job_id, "epoch", history.epoch_message(summary, epochs), data=summary)
        return True


#: The fields of a running job's `best_metrics`; `so_far` tells it from the final one.
BEST_SO_FAR_FIELDS = ("epoch", "map", "micro_f1", "macro_f1", "val_loss")


def _keep_best_so_far(session: Session, job_id: str, point: dict[str, Any]) -> None:
    """Set the job's `best_metrics` to this evaluation when it is the best yet (by mAP, as training).

    Lists show the best metric while a job runs; the succeeded job's own best (from its
    model) replaces it at the end.
    """
    current = session.scalar(select(Job.best_metrics).where(Job.id == job_id)) or {}
    value = point.get("map")
    if value is None or (isinstance(current.get("map"), float) and current["map"] >= value):
        return
    best = {key: point[key] for key in BEST_SO_FAR_FIELDS if key in point} | {"so_far": True}
    session.execute(update(Job).where(Job.id == job_id).values(best_metrics=best))


def record_checkpoint(job_id: str, attempt: int, summary: dict[str, Any], settings: Settings) -> bool:
    """The checkpoint of `summary["epoch"]` is on disk; its event carries the epoch's metrics."""
    with session_scope(settings) as session:
        if not _touch(session, job_id, attempt, settings):
            return False
        history.add(
            session,
            job_id,
            "checkpoint",
            f"checkpoint saved after epoch {summary['epoch']}",
            data=summary | {"attempt": attempt},
        )
        return True


def record_message(
    job_id: str, attempt: int, message: str, settings: Settings, *, level: history.Level
) -> bool:
    """A note for the history that changes nothing else (a resume, an unusable checkpoint)."""
    with session_scope(settings) as session:
        if not _touch(session, job_id, attempt, settings):
            return False
        history.add(session, job_id, "message", message, level=level, data={"attempt": attempt})
        return True


def drop_metric_points_after(job_id: str, attempt: int, epoch: int, settings: Settings) -> None:
    """Forget evaluations past the checkpoint a resumed run starts from; they will be redone."""
    with session_scope(settings) as session:
        if _touch(session, job_id, attempt, settings):
            stale = MetricPoint.job_id == job_id, MetricPoint.epoch > epoch
            session.execute(delete(MetricPoint).where(*stale))


def _best_metrics(model: ModelRecord, probe: ModelRecord | None) -> dict[str, Any]:
    """The job's best_metrics: its fine-tuned model's, and which models it published."""
    metrics = model.best_metrics()
    if probe is not None or "baselines" in metrics:
        metrics["models"] = {"fine_tuned": model.id} | ({"linear_probe": probe.id} if probe else {})
    return metrics


def _cancel_instead(
    session: Session, job_id: str, attempt: int, done: dict[str, Any], message: str
) -> RunOutcome:
    """A success refused because a cancel arrived: end the attempt cancelled ("lost" when not ours)."""
    result = session.execute(
        update(Job)
        .where(*_ours(job_id, attempt))
        .values(status=JobStatus.CANCELLED, **done)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return RunOutcome.LOST
    _status_event(session, job_id, JobStatus.CANCELLED, message)
    record_final(session, job_id)
    return RunOutcome.CANCELLED


def finish_succeeded(
    job_id: str, attempt: int, model: ModelRecord, settings: Settings, probe: ModelRecord | None = None
) -> RunOutcome:
    """Mark the job succeeded and insert its Model row(s) in one transaction.

    `probe` is the linear probe that beat the fine-tuned `model` on validation: both rows
    are inserted and the job's model_id is the probe's. The job's best_metrics stay the
    fine-tuned model's (a sweep ranks its losses by them), with the baselines beside them.
    Returns "succeeded"; "cancelled" when a cancel arrived meanwhile (cancel wins and
    no model is kept); "lost" when the job is no longer this attempt's.
    """
    now = utcnow()
    done = {"finished_at": now, "lease_expires_at": None}
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt), Job.cancel_requested.is_(False))
            .values(status=JobStatus.SUCCEEDED, best_metrics=_best_metrics(model, probe), **done)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return _cancel_instead(session, job_id, attempt, done, "cancelled before the model was kept")
        owner_id = session.execute(select(Job.owner_id).where(Job.id == job_id)).scalar_one()
        insert_model(session, model, owner_id=owner_id, job_id=job_id, point_job=probe is None)
        chosen = model
        if probe is not None:
            insert_model(session, probe, owner_id=owner_id, job_id=job_id)
            chosen = probe
        for warning in model.metrics.get("warnings", []):  # a baseline beat the fine-tuned model
            history.add(session, job_id, "message", warning, level="warning")
        _status_event(session, job_id, JobStatus.SUCCEEDED, f"model {chosen.id} is ready", model_id=chosen.id)
        record_final(session, job_id)
        return RunOutcome.SUCCEEDED


def finish_without_model(
    job_id: str, attempt: int, best_metrics: dict[str, Any], settings: Settings
) -> RunOutcome:
    """Mark a job that keeps no model (a search trial) succeeded with its metrics.

    Returns "succeeded"; "cancelled" when a cancel arrived meanwhile; "lost" when the job
    is no longer this attempt's (as `finish_succeeded`).
    """
    now = utcnow()
    done = {"finished_at": now, "lease_expires_at": None}
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt), Job.cancel_requested.is_(False))
            .values(status=JobStatus.SUCCEEDED, best_metrics=best_metrics, **done)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            state = (best_metrics.get("trial") or {}).get("state", "complete")
            _status_event(session, job_id, JobStatus.SUCCEEDED, f"search trial {state}; no model is kept")
            record_final(session, job_id)
            return RunOutcome.SUCCEEDED
        return _cancel_instead(session, job_id, attempt, done, "cancelled before the trial ended")


def _status_event(
    session: Session, job_id: str, status: JobStatus, why: str, *, level: history.Level = "info", **data: Any
) -> None:
    history.add(
        session,
        job_id,
        "status",
        f"{status.value}: {why}",
        level=level,
        data={"status": status.value, **data},
    )


def finish(
    job_id: str,
    attempt: int,
    status: JobStatus,
    settings: Settings,
    code: str | None = None,
    message: str | None = None,
) -> bool:
    """End this attempt's running job as failed or cancelled (never overwrites a terminal state)."""
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(
                status=status,
                error_code=code,
                error_message=message,
                finished_at=utcnow(),
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        if status == JobStatus.FAILED:
            why = f"{code}: {message}" if code else "the job failed"
            _status_event(session, job_id, status, why, level="error", code=code, error=message)
        else:
            _status_event(session, job_id, status, message or "stopped by a cancel request")
        record_final(session, job_id)
        return True


def release(job_id: str, attempt: int, settings: Settings) -> bool:
    """running -> queued when this worker shuts down: the next claim resumes from the checkpoint.

    A shutdown is not the job's fault, so the attempt is given back and does not count
    towards `job_max_attempts`. The caller sends the job's message again.
    """
    with session_scope(settings) as session:
        result = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(
                status=JobStatus.QUEUED,
                attempts=Job.attempts - 1,
                lease_expires_at=None,
                heartbeat_at=None,
                sent_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        why = "the worker shut down; the job resumes from its last checkpoint on the next worker"
        _status_event(session, job_id, JobStatus.QUEUED, why, level="warning", reason="worker_shutdown")
        return True


@dataclass(frozen=True)
class SweepResult:
    requeued: list[str]
    failed: list[str]
    cancelled: list[str]


def sweep_expired(
    settings: Settings, now: datetime | None = None, exclude: Collection[str] = ()
) -> SweepResult:
    """Take back running jobs whose lease expired: re-queue them, or fail them past the retry limit.

    Each job is moved by a conditional UPDATE on its expired lease, so two sweepers
    (two workers) never both re-queue the same job. `exclude` holds the jobs this
    process is running itself: their heartbeat may merely be late.
    """
    now = now or utcnow()
    requeued: list[str] = []
    failed: list[str] = []
    cancelled: list[str] = []
    with session_scope(settings) as session:
        lost = session.execute(
            select(Job.id, Job.attempts, Job.cancel_requested).where(
                Job.status == JobStatus.RUNNING, Job.lease_expires_at < now
            )
        ).all()
    targets = {JobStatus.QUEUED: requeued, JobStatus.FAILED: failed, JobStatus.CANCELLED: cancelled}
    for job_id, attempts, cancel in lost:
        if job_id in exclude:
            continue
        expired = (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        values, level, why = _sweep_outcome(attempts, bool(cancel), now, settings)
        with session_scope(settings) as session:
            result = session.execute(
                update(Job).where(*expired).values(**values).execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                status = values["status"]
                _status_event(session, job_id, status, why, level=level, reason="lease_expired")
                targets[status].append(job_id)
                if status != JobStatus.QUEUED:
                    record_final(session, job_id)
    return SweepResult(requeued, failed, cancelled)


def lose_training_process(job_id: str, attempt: int, settings: Settings) -> JobStatus | None:
    """A training process of this job's group died (a rank was killed): treat it as a lost worker.

    The worker that watches the group is alive, so it says so at once instead of letting the
    lease run out; the outcome is the sweep's (`_sweep_outcome`): queued again to resume from
    the last checkpoint, counted towards `job_max_attempts`, or cancelled when one was asked.
    Returns the new status, or None when the attempt is no longer this worker's.
    """
    now = utcnow()
    with session_scope(settings) as session:
        row = session.execute(
            select(Job.attempts, Job.cancel_requested).where(*_ours(job_id, attempt))
        ).first()
        if row is None:
            return None
        values, level, why = _sweep_outcome(
            row.attempts, bool(row.cancel_requested), now, settings, _RANK_LOST
        )
        result = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        status: JobStatus = values["status"]
        _status_event(session, job_id, status, why, level=level, reason="training_process_lost")
        if status != JobStatus.QUEUED:
            record_final(session, job_id)
        return status


_WORKER_LOST = "its worker stopped responding"
_RANK_LOST = "a training process of its device group died"


def _sweep_outcome(
    attempts: int, cancel: bool, now: datetime, settings: Settings, what: str = _WORKER_LOST
) -> tuple[dict[str, Any], history.Level, str]:
    """What a lost job becomes (the UPDATE's values), and the history's level and sentence for it."""
    if cancel:
        done = {"status": JobStatus.CANCELLED, "finished_at": now, "lease_expires_at": None}
        return done, "info", f"{what} while a cancel was pending"
    if attempts >= settings.job_max_attempts:
        subject = "the worker running this job stopped responding" if what == _WORKER_LOST else what
        message = f"{subject} ({attempts} of {settings.job_max_attempts} attempts); giving up"
        values = {
            "status": JobStatus.FAILED,
            "finished_at": now,
            "lease_expires_at": None,
            "error_code": "worker_lost",
            "error_message": message,
        }
        return values, "error", f"worker_lost: {message}"
    values = {"status": JobStatus.QUEUED, "lease_expires_at": None, "heartbeat_at": None, "sent_at": None}
    return values, "warning", f"{what}; re-queued to resume from its last checkpoint"


# --- the API's side: cancel, discard, queue positions -----------------------------------


def record_queued(session: Session, job_id: str, waits_for: str | None = None) -> None:
    """The first history entry of a job the caller is inserting (committed with the INSERT).

    `waits_for`: why no worker may take it soon (core.workers.check_devices), said up front.
    """
    why = "the job was accepted and waits for a worker"
    _status_event(session, job_id, JobStatus.QUEUED, f"{why}: {waits_for}" if waits_for else why)


def cancel_queued(session: Session, job_id: str) -> bool:
    """queued -> cancelled at once; False when a worker claimed it first (it is running). Commits."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    ended = bool(result.rowcount)  # type: ignore[attr-defined]
    if ended:
        _status_event(session, job_id, JobStatus.CANCELLED, "cancelled while queued")
        record_final(session, job_id)
    session.commit()
    return ended


def request_cancel(session: Session, job_id: str) -> bool:
    """Flag a running job; its worker stops within one training step. Commits."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(False))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    flagged = bool(result.rowcount)  # type: ignore[attr-defined]
    if flagged:
        history.add(
            session,
            job_id,
            "status",
            "cancel requested; the job stops within one training step",
            data={"status": JobStatus.RUNNING.value, "cancel_requested": True},
        )
    session.commit()
    return flagged


# --- the outbox mark: sending queued jobs (core.jobs.dispatch) ------------------------


def take_for_sending(
    session: Session, job_ids: Collection[str], sent_before: datetime | None = None
) -> list[str]:
    """Stamp `sent_at` on the queued jobs that are due for a message; the ids this caller won. Commits.

    Due means: no message yet (`sent_at` NULL), or, with `sent_before`, last sent before
    it (the broker lost it). The order of `job_ids` is kept, so jobs go out oldest first.
    """
    now = utcnow()
    due = (
        Job.sent_at.is_(None)
        if sent_before is None
        else or_(Job.sent_at.is_(None), Job.sent_at < sent_before)
    )
    taken = []
    for job_id in job_ids:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED, due)
            .values(sent_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            taken.append(job_id)
    session.commit()
    return taken


def mark_unsent(session: Session, job_ids: Collection[str]) -> None:
    """Clear the outbox mark of queued jobs whose send failed; the reconciler sends them. Commits."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.QUEUED)
            .values(sent_at=None)
            .execution_options(synchronize_session=False)
        )
    session.commit()


def queued_send_marks(session: Session) -> list[tuple[str, datetime | None]]:
    """(id, sent_at) of every queued job a worker could still run, oldest first."""
    rows = session.execute(
        select(Job.id, Job.sent_at)
        .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
        .order_by(Job.created_at, Job.id)
    )
    return [(job_id, sent_at) for job_id, sent_at in rows]


def queue_positions(session: Session, job_ids: Collection[str]) -> dict[str, int]:
    """How many queued jobs (of any owner: they share the workers) are ahead of each queued job.

    One query for a whole page: the rank of every queued job in (created_at, id) order,
    kept for the ids asked about. Jobs that are not queued are absent from the result.
    """
    if not job_ids:
        return {}
    ranked = (
        select(
            Job.id.label("id"),
            (func.row_number().over(order_by=(Job.created_at, Job.id)) - 1).label("ahead"),
        )
        .where(Job.status == JobStatus.QUEUED)
        .subquery()
    )
    rows = session.execute(select(ranked.c.id, ranked.c.ahead).where(ranked.c.id.in_(list(job_ids))))
    return {job_id: int(ahead) for job_id, ahead in rows}
