"""A job's stored history: what `core.jobs.lifecycle` records next to each change, and how it is read.

Events are appended in the session of the change they describe (the status UPDATE,
the metric point, the checkpoint's lease touch), so the history and the job row
never disagree. Types:

    status      the job moved to another state (queued, running, succeeded, ...), or a cancel was asked
    epoch       an epoch was evaluated: losses, mAP, F1, samples per second
    checkpoint  an epoch checkpoint is safely on disk: its epoch, step and metrics
    message     anything else worth knowing (a resume, an unusable checkpoint)

`level` is "info", "warning" or "error" (a failure). The event id is global and
increasing, so "after id N" pages a job's history and resumes its SSE stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import JobEvent

EventType = Literal["status", "epoch", "checkpoint", "message"]
Level = Literal["info", "warning", "error"]

#: The metric fields an epoch or checkpoint event keeps (per-class AP stays in the metric point).
SUMMARY_FIELDS = ("epoch", "step", "train_loss", "val_loss", "map", "micro_f1", "macro_f1", "time_s")
MAX_PAGE = 500


def add(
    session: Session,
    job_id: str,
    type: EventType,
    message: str,
    *,
    level: Level = "info",
    data: Mapping[str, Any] | None = None,
) -> None:
    """Append one event in the caller's transaction (committed with the change it records)."""
    session.add(JobEvent(job_id=job_id, type=type, level=level, message=message, data=dict(data or {})))


def metric_summary(point: Mapping[str, Any]) -> dict[str, Any]:
    return {key: point[key] for key in SUMMARY_FIELDS if key in point}


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def epoch_message(point: Mapping[str, Any], epochs: int | None = None) -> str:
    """`epoch 2/3: train loss 0.2100, val loss 0.1980, mAP 0.712, micro-F1 0.660, macro-F1 0.580`."""
    of = f"/{epochs}" if epochs else ""
    text = (
        f"epoch {point['epoch']}{of}: train loss {_number(point.get('train_loss'), 4)}, "
        f"val loss {_number(point.get('val_loss'), 4)}, mAP {_number(point.get('map'), 3)}, "
        f"micro-F1 {_number(point.get('micro_f1'), 3)}, macro-F1 {_number(point.get('macro_f1'), 3)}"
    )
    rate = point.get("samples_per_s")
    return text + (f", {rate:.1f} samples/s" if isinstance(rate, int | float) else "")


def after(session: Session, job_id: str, after_id: int, limit: int) -> list[JobEvent]:
    """Up to `limit` of the job's events with an id above `after_id`, oldest first."""
    statement = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
        .limit(min(limit, MAX_PAGE))
    )
    return list(session.scalars(statement))


def has_epochs(session: Session, job_id: str) -> bool:
    """Whether the job's metric points have epoch events (not so for jobs older than the history)."""
    count = session.scalar(
        select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "epoch")
    )
    return bool(count)


def checkpoints(session: Session, job_id: str) -> list[JobEvent]:
    """The job's checkpoint events, oldest first."""
    statement = (
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "checkpoint").order_by(JobEvent.id)
    )
    return list(session.scalars(statement))
