"""A job on 2 devices: a real worker (`APLSERVE_WORKER_DEVICES=2`, CPU) starts 2 gloo ranks
through torch's launcher. It trains and publishes like a one-process job; a rank SIGKILLed
mid-job ends the whole group within a bounded time and the job resumes from its last
checkpoint like after any worker loss; a cancel stops every rank. After each, no process
of the group is left (the process table is read)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api.services import jobs as job_service
from core.broker import enqueue_job
from core.db.models import JobEvent, MetricPoint
from core.db.session import session_scope
from core.settings import Settings
from tests.apl.synthetic import write_text_dataset
from tests.worker.harness import (
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

#: Each case starts one or two groups of processes that import torch and transformers.
pytestmark = pytest.mark.timeout(600)

#: Starting 2 ranks (each imports torch and transformers) on the shared 2-core machine is slow.
GROUP_TIMEOUT = 240.0
#: A killed rank ends its group within this (the agent notices in 0.1 s; its peers fail at once).
GROUP_END_BOUND = 45.0


def group_processes(job_id: str) -> dict[int, str]:
    """Live processes of a job's group (launcher and ranks: their command line names its directory)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"aplserve-group-{job_id}-" in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def rank_pid(job_id: str, rank: int) -> int | None:
    for pid, cmdline in group_processes(job_id).items():
        if "worker.rank" not in cmdline or "worker.launcher" in cmdline:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.fixture
def two_devices(
    data_dir: Path, sqlite_schema: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Settings, ServiceProcess, str]]:
    settings = backend_settings(
        request, "sqlite", data_dir, sqlite_schema, job_lease_seconds=10, job_max_attempts=3
    )
    worker = start_worker(settings, data_dir / "worker.log", APLSERVE_WORKER_DEVICES="2")
    try:
        yield settings, worker, make_owner(settings)
    finally:
        worker.close()
        release_backend(settings)


def _submit(settings: Settings, owner: str, epochs: int) -> str:
    dataset_id = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=48), "text")
    job_id = make_job(settings, owner, dataset_id, tiny_text_spec(TINY_BERT[0], epochs=epochs, devices=2))
    enqueue_job(job_id, settings)
    return job_id


TINY_BERT: list[str] = []


@pytest.fixture(autouse=True)
def _model(tiny_bert: str) -> None:
    TINY_BERT[:] = [tiny_bert]


def _events(settings: Settings, job_id: str) -> list[str]:
    with session_scope(settings) as session:
        return list(
            session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )


def test_a_two_device_job_trains_publishes_and_leaves_no_process(
    two_devices: tuple[Settings, ServiceProcess, str],
) -> None:
    settings, worker, owner = two_devices
    job_id = _submit(settings, owner, epochs=2)
    job = wait_for_status(settings, job_id, ("succeeded", "failed", "cancelled"), timeout=GROUP_TIMEOUT)
    assert job.status == "succeeded", (job.error_code, job.error_message, worker.log()[-4000:])
    assert "trains on 2 devices" in worker.log()
    assert "x2 (gloo)" in worker.log()  # rank 0's start line names the group
    with session_scope(settings) as session:
        epochs = session.scalars(select(MetricPoint.epoch).where(MetricPoint.job_id == job_id)).all()
    _, published = published_models(settings, job_id)  # rank 0 alone publishes: one of each kind
    assert sorted(epochs) == [1, 2]  # rank 0 alone reports: one point per epoch
    assert job.model_id in {row.id for row in published} and settings.files.artifact(job.model_id).is_file()
    wait_for(lambda: not group_processes(job_id), 30, "the group's processes to exit")


def test_a_killed_rank_ends_its_group_and_the_job_resumes_from_its_checkpoint(
    two_devices: tuple[Settings, ServiceProcess, str],
) -> None:
    settings, worker, owner = two_devices
    job_id = _submit(settings, owner, epochs=6)
    wait_for(lambda: settings.files.checkpoint(job_id).is_file(), GROUP_TIMEOUT, "the first checkpoint")
    victim = wait_for(lambda: rank_pid(job_id, 1), 30, "rank 1's process")
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: job_row(settings, job_id).attempts == 2 or job_row(settings, job_id).status != "running",
        GROUP_END_BOUND,
        "the job to be taken back",
    )
    first_group_gone = time.monotonic() - killed
    assert first_group_gone < GROUP_END_BOUND
    job = wait_for_status(settings, job_id, ("succeeded", "failed", "cancelled"), timeout=GROUP_TIMEOUT)
    assert job.status == "succeeded", (job.error_code, job.error_message, worker.log()[-4000:])
    assert job.attempts == 2
    events = _events(settings, job_id)
    assert any("a training process of its device group died" in e for e in events), events
    assert any("resuming from the last epoch checkpoint" in e for e in events), events
    wait_for(lambda: not group_processes(job_id), 30, "the group's processes to exit")


def test_cancel_stops_every_rank(two_devices: tuple[Settings, ServiceProcess, str]) -> None:
    settings, worker, owner = two_devices
    job_id = _submit(settings, owner, epochs=200)
    wait_for(lambda: job_row(settings, job_id).progress["step"] > 0, GROUP_TIMEOUT, "the first steps")
    assert rank_pid(job_id, 0) and rank_pid(job_id, 1)
    with session_scope(settings) as session:
        job_service.cancel(session, owner, job_id, settings=settings)
    job = wait_for_status(settings, job_id, ("cancelled", "failed", "succeeded"), timeout=60)
    assert job.status == "cancelled", (job.error_code, job.error_message)
    wait_for(lambda: not group_processes(job_id), 30, "every rank to exit")
    assert worker.alive()


def test_a_killed_worker_leaves_no_rank_behind(two_devices: tuple[Settings, ServiceProcess, str]) -> None:
    """The launcher runs in a session of its own, so killing the worker's group does not reach it:
    it notices its parent is gone and stops the ranks (which would also exit without it)."""
    settings, worker, owner = two_devices
    job_id = _submit(settings, owner, epochs=200)
    wait_for(lambda: job_row(settings, job_id).progress["step"] > 0, GROUP_TIMEOUT, "the first steps")
    assert rank_pid(job_id, 0) and rank_pid(job_id, 1)
    worker.kill()  # SIGKILL to the worker's process group, as a crash would
    wait_for(lambda: not group_processes(job_id), 30, "the launcher and every rank to exit")
