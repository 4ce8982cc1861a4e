"""A search sweep run by real worker processes: trials in parallel on two workers, one worker
SIGKILLed in the middle of a trial, and the sweep still finishes (the lease sweep re-queues
the trial, which resumes on the other worker; every worker's sweep also advances the search)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.services import sweeps as sweep_service
from core.db.models import Job, SweepTrial
from core.db.session import session_scope
from core.settings import Settings
from core.sweeps.spec import SweepSpec
from tests.apl.synthetic import write_text_dataset
from tests.worker.harness import (
    BACKENDS,
    backend_settings,
    make_dataset,
    make_owner,
    release_backend,
    wait_for,
)
from tests.worker.test_recovery import Workers

LEASE_SECONDS = 3
TRIALS = 3
LR_RANGE = {"low": 3e-4, "high": 3e-2, "log": True}
SWEEP_TIMEOUT = 600.0


@pytest.fixture
def two_workers(
    request: pytest.FixtureRequest, data_dir: Path, sqlite_schema: Path
) -> Iterator[tuple[Settings, Workers]]:
    settings = backend_settings(
        request, request.param, data_dir, sqlite_schema, job_lease_seconds=LEASE_SECONDS, job_max_attempts=3
    )
    workers = Workers(settings)
    try:
        yield settings, workers
    finally:
        workers.close()
        release_backend(settings)


def start_search(settings: Settings, model: str) -> str:
    """bce vs apl, 3 learning-rate trials each, one replicate seed: made by the sweeps service as
    POST /v1/sweeps makes it, its first trials sent to the workers."""
    owner = make_owner(settings)
    dataset_id = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=64), "text")
    spec = SweepSpec.model_validate(
        {
            "dataset_id": dataset_id,
            "base_model": model,
            "candidates": [{"name": "bce"}, {"name": "apl"}],
            "seeds": [0],
            "hyperparameters": {"epochs": 4, "batch_size": 8, "max_length": 16},
            "search": {
                "trials": TRIALS,
                "space": {"learning_rate": {"low": 3e-4, "high": 3e-2, "log": True}},
            },
        }
    )
    with session_scope(settings) as session:
        sweep, created, unsent = sweep_service.create(session, owner, spec, None, settings)
        assert created and len(unsent) == 4
        sweep_service.send_children(session, settings, sweep.id, unsent)
        return sweep.id


def sweep_children(settings: Settings, sweep_id: str) -> list[Job]:
    with session_scope(settings) as session:
        rows = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
        session.expunge_all()
    return rows


def sweep_status(settings: Settings, sweep_id: str) -> dict[str, Any]:
    with session_scope(settings) as session:
        row = sweep_service.get_owned(session, sweep_service_owner(settings, sweep_id), sweep_id)
        return sweep_service.to_schema(session, settings, row).model_dump(mode="json")


def sweep_service_owner(settings: Settings, sweep_id: str) -> str:
    from core.db.models import Sweep

    with session_scope(settings) as session:
        return session.get_one(Sweep, sweep_id).owner_id


def running_trial(settings: Settings, sweep_id: str) -> Job | None:
    """A trial job that has trained a step or more."""
    for job in sweep_children(settings, sweep_id):
        if job.role == "trial" and job.status == "running" and (job.progress or {}).get("step", 0) > 0:
            return job
    return None


def overlapped(jobs: list[Job]) -> bool:
    """Whether two of the jobs ran at the same time."""
    spans = sorted((j.started_at, j.finished_at) for j in jobs if j.started_at and j.finished_at)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize("two_workers", BACKENDS, indirect=True)
def test_a_search_sweep_finishes_on_two_workers_though_one_dies_mid_trial(
    two_workers: tuple[Settings, Workers], tiny_bert: str
) -> None:
    settings, workers = two_workers
    first, second = workers.start(), workers.start()
    sweep_id = start_search(settings, tiny_bert)

    victim = wait_for(lambda: running_trial(settings, sweep_id), SWEEP_TIMEOUT, "a trial to train")
    owner = first if f"job {victim.id} claimed" in first.log() else second
    survivor = second if owner is first else first
    owner.kill()  # a crash mid-trial: no release, the lease runs out

    def ended() -> dict[str, Any] | None:
        status = sweep_status(settings, sweep_id)
        return status if status["status"] in ("succeeded", "failed", "cancelled") else None

    sweep = wait_for(ended, SWEEP_TIMEOUT, "the sweep to end", interval=0.5)
    assert sweep["status"] == "succeeded", (sweep, survivor.log()[-3000:])
    assert sweep["phase"] == "replicate" and sweep["trials"]["done"] == 2 * TRIALS
    assert sweep["trials"]["running"] == 0 and sweep["trials"]["failed"] == 0

    children = sweep_children(settings, sweep_id)
    trials = [j for j in children if j.role == "trial"]
    replicates = [j for j in children if j.role == "replicate"]
    assert len(trials) == 2 * TRIALS and len(replicates) == 2
    assert all("baselines" in (j.best_metrics or {}) for j in replicates), "the leaderboard's baseline rows"
    assert all(j.status == "succeeded" and j.model_id is None for j in trials)
    resumed = next(j for j in trials if j.id == victim.id)
    assert resumed.attempts == 2, "the killed trial was re-queued and run again"
    assert "lost its worker; re-queued" in survivor.log()
    assert overlapped(trials), "no two trials ran at the same time on the two workers"
    with session_scope(settings) as session:
        numbers = sorted(session.execute(select(SweepTrial.candidate, SweepTrial.number)).all())
    assert numbers == [(c, n) for c in (0, 1) for n in range(TRIALS)]
    for job in trials:  # validation only: no test split was scored, no predictions kept, no baselines
        assert "test" not in (job.best_metrics or {})
        assert "baselines" not in (job.best_metrics or {})
        assert not settings.files.predictions(job.id, "test", job.attempts).exists()
