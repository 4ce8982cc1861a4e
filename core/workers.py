"""The live workers and the devices they offer: where a job that asks for several devices can run.

Every worker keeps a row (core.db.models.Worker) fresh with its lease sweep. A job's
device demand routes it to a broker queue that only workers with enough devices consume
(core.broker.device_queue); this module answers the API's question before a job is
queued: can any live worker run it (else 422 `devices_unavailable`, naming what
exists), and if all that can are busy, what the job waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db.models import Worker, utcnow
from core.db.session import session_scope
from core.errors import AppError
from core.settings import Settings


def sweep_seconds(settings: Settings) -> float:
    """How often a worker sweeps (and so refreshes its row): a quarter lease, within [0.5, 30] s."""
    return max(0.5, min(30.0, settings.job_lease_seconds / 4))


def live_seconds(settings: Settings) -> float:
    """A row not refreshed for this long belongs to a worker that died (three missed sweeps)."""
    return 3 * sweep_seconds(settings) + 5.0


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself."""

    id: str
    hostname: str
    pid: int
    device_kind: str
    device_count: int


def _stale_before(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(seconds=live_seconds(settings))


def announce(settings: Settings, info: WorkerInfo, job_id: str | None = None) -> None:
    """Write or refresh this worker's row (and drop rows of workers that stopped being seen)."""
    now = utcnow()
    with session_scope(settings) as session:
        session.execute(delete(Worker).where(Worker.seen_at < _stale_before(settings, now)))
        row = session.get(Worker, info.id)
        if row is None:
            row = Worker(id=info.id, started_at=now)
            session.add(row)
        row.hostname, row.pid = info.hostname, info.pid
        row.device_kind, row.device_count = info.device_kind, info.device_count
        row.job_id, row.seen_at = job_id, now


def withdraw(settings: Settings, worker_id: str) -> None:
    """Remove this worker's row (it stops)."""
    with session_scope(settings) as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))


def live(session: Session, settings: Settings) -> list[Worker]:
    """The workers seen within `live_seconds`, largest device groups first."""
    rows = session.scalars(
        select(Worker)
        .where(Worker.seen_at >= _stale_before(settings, utcnow()))
        .order_by(Worker.device_count.desc(), Worker.id)
    )
    return list(rows)


def _names(rows: list[Worker]) -> str:
    return ", ".join(f"{row.id} ({row.device_count} {row.device_kind})" for row in rows) or "none is running"


def check_devices(session: Session, settings: Settings, devices: int | str) -> str | None:
    """Refuse a job no live worker can run; the reason it waits when every worker that can is busy.

    One device (or `auto`) runs on any worker, and is never refused: it waits for one like
    every job always has.
    """
    if not isinstance(devices, int) or devices <= 1:
        return None
    workers = live(session, settings)
    able = [row for row in workers if row.device_count >= devices]
    if not able:
        raise AppError(
            422,
            "devices_unavailable",
            f"no live worker has {devices} devices; live workers: {_names(workers)}",
            errors=[
                {
                    "loc": ["body", "hyperparameters", "devices"],
                    "msg": f"no live worker has {devices} devices",
                }
            ],
            extra={
                "workers": [
                    {"id": row.id, "devices": row.device_count, "kind": row.device_kind} for row in workers
                ]
            },
        )
    if all(row.job_id is not None for row in able):
        return f"every worker with {devices} or more devices is busy ({_names(able)})"
    return None
