"""Workers that stop mid-job: a warm shutdown (SIGTERM) gives the job back at once, a
crash (SIGKILL of the process group) is found by the lease sweep. Either way the job
resumes from its last epoch checkpoint on the next worker and continues the same
training curve; a job that keeps losing its worker ends `failed` with `worker_lost`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from sqlalchemy import select

from apl.spec import JobSpec
from apl.training import TrainConfig, train
from core.broker import enqueue_job
from core.db.models import MetricPoint
from core.db.session import session_scope
from core.settings import Settings
from tests.apl.synthetic import write_text_dataset
from tests.worker.harness import (
    BACKENDS,
    ServiceProcess,
    backend_settings,
    job_row,
    make_dataset,
    make_job,
    make_owner,
    published_models,
    release_backend,
    start_worker,
    tiny_text_spec,
    wait_for,
    wait_for_status,
)
from worker.app import sweep_once

LEASE_SECONDS = 3
EPOCHS = 8


class Workers:
    """Starts numbered worker processes for one test and makes sure none outlives it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started: list[ServiceProcess] = []

    def start(self) -> ServiceProcess:
        log = self.settings.data_dir / f"worker-{len(self.started)}.log"
        worker = start_worker(self.settings, log)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.close()


@pytest.fixture
def recovery(
    request: pytest.FixtureRequest, data_dir: Path, sqlite_schema: Path
) -> Iterator[tuple[Settings, Workers]]:
    backend = getattr(request, "param", "sqlite")
    settings = backend_settings(
        request, backend, data_dir, sqlite_schema, job_lease_seconds=LEASE_SECONDS, job_max_attempts=3
    )
    workers = Workers(settings)
    try:
        yield settings, workers
    finally:
        workers.close()
        release_backend(settings)


def checkpoint_file(settings: Settings, job_id: str) -> Path:
    return settings.files.checkpoint(job_id)


def checkpoint_epoch(settings: Settings, job_id: str) -> int:
    """The epoch of the job's checkpoint on disk (0 without one); reads only its metadata."""
    path = checkpoint_file(settings, job_id)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (FileNotFoundError, OSError):
        return 0
    return int(json.loads(metadata["state"])["loop"]["epoch"])


def points_by_epoch(settings: Settings, job_id: str) -> dict[int, MetricPoint]:
    with session_scope(settings) as session:
        rows = session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id)).all()
        session.expunge_all()
    by_epoch = {row.epoch: row for row in rows}
    assert len(by_epoch) == len(rows), "an epoch has two metric points"
    return by_epoch


def wait_for_checkpoint_after(settings: Settings, job_id: str, epoch: int) -> None:
    wait_for(
        lambda: checkpoint_epoch(settings, job_id) > epoch,
        120,
        f"a checkpoint of job {job_id} after epoch {epoch}",
        interval=0.05,
    )


def reference_curve(dataset_dir: Path, spec: dict[str, object]) -> list[tuple[float, float]]:
    """(train_loss, mAP) per epoch of the same job trained without interruption, in this process."""
    job = JobSpec.model_validate({"dataset_id": "x", **spec})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers run with OMP_NUM_THREADS=1
    try:
        result = train(TrainConfig.from_job_spec(job, dataset_dir, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    return [(m.train_loss, m.map) for m in result.history]


@pytest.mark.parametrize("recovery", BACKENDS, indirect=True)
def test_a_job_survives_a_warm_shutdown_and_a_crash(
    recovery: tuple[Settings, Workers], tiny_bert: str
) -> None:
    settings, workers = recovery
    owner = make_owner(settings)
    dataset_id = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=64), "text")
    spec = tiny_text_spec(tiny_bert, epochs=EPOCHS)
    job_id = make_job(settings, owner, dataset_id, spec)

    # 1. A warm shutdown (what `aplserve serve` does on Ctrl-C) mid-job: the worker exits
    #    promptly and the job is queued again, the attempt given back, the checkpoint kept.
    first = workers.start()
    enqueue_job(job_id, settings)
    wait_for_checkpoint_after(settings, job_id, 0)
    assert first.terminate() < 15
    released = job_row(settings, job_id)
    assert (released.status, released.attempts) == ("queued", 0), first.log()[-2000:]
    assert checkpoint_file(settings, job_id).is_file()
    assert "Traceback" not in first.log() and f"job {job_id} released" in first.log()  # expected: one line
    released_at = checkpoint_epoch(settings, job_id)
    assert 1 <= released_at < EPOCHS

    # 2. The next worker resumes it; then it is SIGKILLed after another epoch checkpoint.
    second = workers.start()
    wait_for_checkpoint_after(settings, job_id, released_at)
    second.kill()
    crashed = job_row(settings, job_id)
    assert (crashed.status, crashed.attempts) == ("running", 1)
    resumed_at = checkpoint_epoch(settings, job_id)
    assert released_at < resumed_at < EPOCHS
    kept = {epoch: p.id for epoch, p in points_by_epoch(settings, job_id).items() if epoch <= resumed_at}
    assert sorted(kept) == list(range(1, resumed_at + 1))

    # 3. A new worker's lease sweep finds the dead worker's job, queues it again, and it
    #    resumes from the crash's last checkpoint and succeeds.
    third = workers.start()
    job = wait_for_status(settings, job_id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", (job.error_code, job.error_message, third.log()[-3000:])
    assert job.attempts == 2
    assert "lost its worker; re-queued" in third.log()

    points = points_by_epoch(settings, job_id)
    assert sorted(points) == list(range(1, EPOCHS + 1))  # every epoch once, none missing
    # Epochs before the checkpoint were not trained again: their rows are the originals.
    assert {epoch: points[epoch].id for epoch in kept} == kept
    steps = [points[epoch].step for epoch in sorted(points)]
    assert steps == sorted(steps) and len(set(steps)) == EPOCHS
    _, published = published_models(settings, job_id)  # one of each kind: nothing published twice
    assert job.model_id in {row.id for row in published}

    # The interrupted run followed the same curve as one that was never interrupted.
    expected = reference_curve(settings.files.dataset(dataset_id), spec)
    for epoch, (loss, mean_ap) in enumerate(expected, start=1):
        got = points[epoch]
        assert got.train_loss is not None and got.map is not None
        assert math.isclose(got.train_loss, loss, rel_tol=1e-3), (epoch, got.train_loss, loss)
        assert math.isclose(got.map, mean_ap, abs_tol=1e-3), (epoch, got.map, mean_ap)


def test_a_job_that_keeps_losing_its_worker_fails_as_worker_lost(
    recovery: tuple[Settings, Workers], tiny_bert: str
) -> None:
    settings, workers = recovery
    owner = make_owner(settings)
    dataset_id = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=48), "text")
    # Two workers already died on it; the third attempt is the last one.
    job_id = make_job(settings, owner, dataset_id, tiny_text_spec(tiny_bert, epochs=200), attempts=2)
    doomed = workers.start()
    enqueue_job(job_id, settings)
    wait_for(
        lambda: (row := job_row(settings, job_id)).status == "running" and row.progress["step"] > 0,
        120,
        "the last attempt to start training",
    )
    doomed.kill()
    assert job_row(settings, job_id).status == "running"

    # The periodic sweep of any worker (the same function, called here) fails it once its
    # lease has run out, instead of queueing it a fourth time.
    result = wait_for(lambda: sweep_once(settings).failed, LEASE_SECONDS + 30, "the lease to run out")
    assert result == [job_id]
    job = job_row(settings, job_id)
    assert (job.status, job.error_code, job.attempts) == ("failed", "worker_lost", 3)
    assert job.error_message and "stopped responding" in job.error_message
    assert job.finished_at is not None and job.model_id is None and job.lease_expires_at is None
