"""The live workers and their devices: where jobs that ask for several devices can run."""

from __future__ import annotations

from api.deps import OwnerDep, SessionDep, SettingsDep
from api.routing import APIRouter
from api.schemas import WorkerEntry, WorkerList, problem_responses
from core import workers

router = APIRouter(prefix="/v1/workers", tags=["workers"], responses=problem_responses("unauthorized"))


@router.get("", response_model=WorkerList)
def list_workers(_principal: OwnerDep, session: SessionDep, settings: SettingsDep) -> WorkerList:
    """Every live worker: its devices (kind and count, what one job may use at once) and whether it is busy.

    A job's `hyperparameters.devices` must not exceed the largest `devices` listed here
    (422 `devices_unavailable`); a worker is live while it keeps sweeping (a row unseen
    for a few sweeps belongs to a worker that died and is left out).
    """
    rows = workers.live(session, settings)
    return WorkerList(
        items=[
            WorkerEntry(
                id=row.id,
                hostname=row.hostname,
                device_kind=row.device_kind,
                devices=row.device_count,
                busy=row.job_id is not None,
                started_at=row.started_at,
                seen_at=row.seen_at,
            )
            for row in rows
        ],
        max_devices=max((row.device_count for row in rows), default=0),
    )
