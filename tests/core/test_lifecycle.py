"""The job row's transitions (core/jobs/lifecycle.py) on SQLite and PostgreSQL.

These conditional UPDATEs are the whole concurrency story of the worker: the claim
makes a redelivered message a no-op, the attempt number fences a worker that lost
its lease, and the sweep takes back jobs of dead workers exactly once.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.db.models import Job, JobEvent, MetricPoint, Model, utcnow
from core.db.session import session_scope
from core.jobs import lifecycle
from core.jobs.status import JobStatus
from core.registry import ModelRecord
from core.settings import Settings
from tests.apl.synthetic import write_text_dataset
from tests.worker.harness import job_row, make_dataset, make_job, make_owner
from worker.runner import run_job

SPEC = {"base_model": "minilm-l6", "hyperparameters": {"epochs": 2}}


@pytest.fixture
def job_id(settings: Settings) -> str:
    owner = make_owner(settings)
    dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=12), "text")
    return make_job(settings, owner, dataset, SPEC)


def point(epoch: int, loss: float = 1.0) -> dict[str, object]:
    return {
        "epoch": epoch,
        "step": epoch * 3,
        "train_loss": loss,
        "val_loss": loss,
        "map": 0.5,
        "micro_f1": 0.5,
        "macro_f1": 0.5,
        "per_class_ap": {"a": 0.5},
        "time_s": float(epoch),
    }


def expire(settings: Settings, job_id: str) -> None:
    with session_scope(settings) as session:
        session.get_one(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=5)


def count(settings: Settings, model: type[MetricPoint] | type[Model], job_id: str) -> int:
    with session_scope(settings) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id)) or 0)


def test_claim_moves_queued_to_running_once(settings: Settings, job_id: str) -> None:
    claimed = lifecycle.claim(job_id, settings)
    assert claimed is not None
    assert claimed.attempt == 1 and claimed.dataset_modality == "text"
    row = job_row(settings, job_id)
    assert row.status == "running" and row.attempts == 1
    assert row.started_at is not None and row.heartbeat_at is not None
    assert row.lease_expires_at is not None
    assert row.lease_expires_at > utcnow() + timedelta(seconds=settings.job_lease_seconds - 30)
    # A redelivered message finds the job running: nothing changes.
    assert lifecycle.claim(job_id, settings) is None
    assert job_row(settings, job_id).attempts == 1


def test_only_one_of_two_racing_claims_wins(settings: Settings, job_id: str) -> None:
    barrier = threading.Barrier(2)
    results: list[lifecycle.ClaimedJob | None] = []
    errors: list[BaseException] = []

    def contender() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(lifecycle.claim(job_id, settings))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contender, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a claim did not return in 30 s"
    assert not errors
    assert len([r for r in results if r is not None]) == 1
    assert job_row(settings, job_id).attempts == 1


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "cancelled"])
def test_claim_skips_a_job_that_is_not_queued(settings: Settings, job_id: str, status: str) -> None:
    with session_scope(settings) as session:
        session.get_one(Job, job_id).status = status
    assert lifecycle.claim(job_id, settings) is None
    # The task body itself is a no-op too (before any data or model is touched).
    assert run_job(job_id, settings) == "skipped"
    assert job_row(settings, job_id).status == status


def test_claim_skips_a_queued_job_with_a_cancel_request(settings: Settings, job_id: str) -> None:
    with session_scope(settings) as session:
        session.get_one(Job, job_id).cancel_requested = True
    assert lifecycle.claim(job_id, settings) is None


def test_resumed_claim_keeps_the_first_start_time(settings: Settings, job_id: str) -> None:
    first = lifecycle.claim(job_id, settings)
    assert first is not None
    started = job_row(settings, job_id).started_at
    expire(settings, job_id)
    assert lifecycle.sweep_expired(settings).requeued == [job_id]
    second = lifecycle.claim(job_id, settings)
    assert second is not None and second.attempt == 2
    assert job_row(settings, job_id).started_at == started


def test_writes_of_a_superseded_attempt_are_ignored(settings: Settings, job_id: str) -> None:
    old = lifecycle.claim(job_id, settings)
    assert old is not None
    expire(settings, job_id)
    lifecycle.sweep_expired(settings)
    new = lifecycle.claim(job_id, settings)
    assert new is not None and new.attempt == old.attempt + 1

    assert lifecycle.heartbeat(job_id, new.attempt, settings)
    assert not lifecycle.heartbeat(job_id, old.attempt, settings)
    lifecycle.set_progress(job_id, old.attempt, {"epoch": 9, "epochs": 9, "step": 9, "steps": 9}, settings)
    assert job_row(settings, job_id).progress["epoch"] != 9
    assert not lifecycle.add_metric_point(job_id, old.attempt, point(1), settings)
    assert count(settings, MetricPoint, job_id) == 0
    assert not lifecycle.finish(job_id, old.attempt, "failed", settings, "internal", "x")
    assert lifecycle.finish_succeeded(job_id, old.attempt, model_values("m-0"), settings) == "lost"
    assert not lifecycle.release(job_id, old.attempt, settings)
    assert job_row(settings, job_id).status == "running"


def test_metric_points_replace_a_repeated_epoch_and_drop_after_a_checkpoint(
    settings: Settings, job_id: str
) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    for epoch in (1, 2, 3):
        assert lifecycle.add_metric_point(job_id, job.attempt, point(epoch), settings)
    assert lifecycle.add_metric_point(job_id, job.attempt, point(2, loss=0.25), settings)
    with session_scope(settings) as session:
        rows = session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id)).all()
        assert sorted(r.epoch for r in rows) == [1, 2, 3]
        assert next(r.train_loss for r in rows if r.epoch == 2) == 0.25
    lifecycle.drop_metric_points_after(job_id, job.attempt, 1, settings)
    assert count(settings, MetricPoint, job_id) == 1


def test_a_running_job_shows_its_best_evaluation_so_far_until_it_succeeds(
    settings: Settings, job_id: str
) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    for epoch, value in ((1, 0.41), (2, 0.52), (3, 0.47)):
        assert lifecycle.add_metric_point(job_id, job.attempt, point(epoch) | {"map": value}, settings)
        best = job_row(settings, job_id).best_metrics
        assert best is not None and best["so_far"] is True
        assert best["map"] == max(v for e, v in ((1, 0.41), (2, 0.52), (3, 0.47)) if e <= epoch)
    assert job_row(settings, job_id).best_metrics["epoch"] == 2  # the later, worse epoch kept it
    lifecycle.finish_succeeded(job_id, job.attempt, model_values("m-so-far"), settings)
    assert job_row(settings, job_id).best_metrics == {"map": 0.5}  # the model's own best replaces it


def model_values(model_id: str) -> ModelRecord:
    return ModelRecord(
        id=model_id,
        base_model="minilm-l6",
        modality="text",
        labels=["a"],
        thresholds={"a": 0.5},
        metrics={"map": 0.5, "per_class_ap": {"a": 0.5}},
        artifact_path=f"artifacts/{model_id}.tar",
        sha256="0" * 64,
        size_bytes=1,
    )


def test_success_writes_the_model_row_and_the_job_together(settings: Settings, job_id: str) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    outcome = lifecycle.finish_succeeded(job_id, job.attempt, model_values("m-1"), settings)
    assert outcome == "succeeded"
    row = job_row(settings, job_id)
    assert row.status == "succeeded" and row.model_id == "m-1" and row.best_metrics == {"map": 0.5}
    assert row.finished_at is not None and row.lease_expires_at is None
    assert count(settings, Model, job_id) == 1


def test_a_cancel_that_arrives_before_the_model_is_kept_wins(settings: Settings, job_id: str) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    with session_scope(settings) as session:
        session.get_one(Job, job_id).cancel_requested = True
    assert lifecycle.finish_succeeded(job_id, job.attempt, model_values("m-2"), settings) == "cancelled"
    assert job_row(settings, job_id).status == "cancelled"
    assert count(settings, Model, job_id) == 0


def test_sweep_requeues_fails_and_cancels_expired_jobs(settings: Settings) -> None:
    owner = make_owner(settings)
    dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=12), "text")
    fresh, retry, last, cancel, mine = (make_job(settings, owner, dataset, SPEC) for _ in range(5))
    for job_id in (fresh, retry, last, cancel, mine):
        assert lifecycle.claim(job_id, settings) is not None
    with session_scope(settings) as session:
        session.get_one(Job, last).attempts = settings.job_max_attempts
        session.get_one(Job, cancel).cancel_requested = True
    for job_id in (retry, last, cancel, mine):
        expire(settings, job_id)

    result = lifecycle.sweep_expired(settings, exclude={mine})
    assert result.requeued == [retry]
    assert result.failed == [last]
    assert result.cancelled == [cancel]
    assert job_row(settings, fresh).status == "running"  # its lease is still valid
    assert job_row(settings, mine).status == "running"  # this process runs it
    requeued = job_row(settings, retry)
    assert requeued.status == "queued" and requeued.attempts == 1
    failed = job_row(settings, last)
    assert failed.status == "failed" and failed.error_code == "worker_lost"
    assert failed.error_message and "stopped responding" in failed.error_message
    assert job_row(settings, cancel).status == "cancelled"
    # A second sweeper finds nothing left to do.
    again = lifecycle.sweep_expired(settings, exclude={mine})
    assert again.requeued == again.failed == again.cancelled == []


def test_release_gives_the_attempt_back(settings: Settings, job_id: str) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    assert lifecycle.release(job_id, job.attempt, settings)
    row = job_row(settings, job_id)
    assert row.status == "queued" and row.attempts == 0 and row.lease_expires_at is None
    # Its old message is spent: it waits for a send (or the reconciler), still queued.
    assert row.sent_at is None


def history_of(settings: Settings, job_id: str) -> list[tuple[str, str, str | None]]:
    with session_scope(settings) as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        return [(row.type, row.level, row.data.get("status") or row.data.get("epoch")) for row in rows]


def test_every_change_is_recorded_in_the_history(settings: Settings, job_id: str) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    assert lifecycle.add_metric_point(
        job_id, job.attempt, point(1, 0.5), settings, epochs=2, samples_per_s=12.5
    )
    assert lifecycle.record_checkpoint(job_id, job.attempt, {"epoch": 1, "step": 3, "map": 0.5}, settings)
    assert lifecycle.release(job_id, job.attempt, settings)
    again = lifecycle.claim(job_id, settings)
    assert again is not None
    assert lifecycle.record_message(job_id, again.attempt, "resuming", settings, level="info")
    assert lifecycle.finish(job_id, again.attempt, JobStatus.FAILED, settings, "out_of_memory", "too big")
    assert history_of(settings, job_id) == [
        ("status", "info", "running"),
        ("epoch", "info", 1),
        ("checkpoint", "info", 1),
        ("status", "warning", "queued"),
        ("status", "info", "running"),
        ("message", "info", None),
        ("status", "error", "failed"),
    ]
    with session_scope(settings) as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        epoch, failed = rows[1], rows[-1]
        assert epoch.message == (
            "epoch 1/2: train loss 0.5000, val loss 0.5000, mAP 0.500, micro-F1 0.500, macro-F1 0.500, "
            "12.5 samples/s"
        )
        assert epoch.data["samples_per_s"] == 12.5 and "per_class_ap" not in epoch.data
        assert failed.message == "failed: out_of_memory: too big" and failed.data["code"] == "out_of_memory"
        assert [row.id for row in rows] == sorted(row.id for row in rows)


def test_a_superseded_attempt_records_nothing(settings: Settings, job_id: str) -> None:
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    expire(settings, job_id)
    assert lifecycle.sweep_expired(settings).requeued == [job_id]
    before = history_of(settings, job_id)
    assert before[-1] == ("status", "warning", "queued")
    assert not lifecycle.add_metric_point(job_id, job.attempt, point(1), settings)
    assert not lifecycle.record_checkpoint(job_id, job.attempt, {"epoch": 1}, settings)
    assert not lifecycle.finish(job_id, job.attempt, JobStatus.CANCELLED, settings)
    assert history_of(settings, job_id) == before


def test_sweep_outcomes_are_recorded(settings: Settings) -> None:
    owner = make_owner(settings)
    dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=12), "text")
    retry, last, cancel = (make_job(settings, owner, dataset, SPEC) for _ in range(3))
    for job_id in (retry, last, cancel):
        assert lifecycle.claim(job_id, settings) is not None
        expire(settings, job_id)
    with session_scope(settings) as session:
        session.get_one(Job, last).attempts = settings.job_max_attempts
        session.get_one(Job, cancel).cancel_requested = True
    lifecycle.sweep_expired(settings)
    assert history_of(settings, retry)[-1] == ("status", "warning", "queued")
    assert history_of(settings, last)[-1] == ("status", "error", "failed")
    assert history_of(settings, cancel)[-1] == ("status", "info", "cancelled")


def test_a_lost_training_process_counts_like_a_lost_worker(settings: Settings, job_id: str) -> None:
    """A rank of a multi-device job died: queued again (attempt counted), then worker_lost at the limit."""
    job = lifecycle.claim(job_id, settings)
    assert job is not None
    assert lifecycle.lose_training_process(job_id, job.attempt + 1, settings) is None  # not our attempt
    assert lifecycle.lose_training_process(job_id, job.attempt, settings) == JobStatus.QUEUED
    row = job_row(settings, job_id)
    assert (row.status, row.attempts, row.sent_at) == ("queued", 1, None)
    with session_scope(settings) as session:
        session.get_one(Job, job_id).attempts = settings.job_max_attempts - 1
    job = lifecycle.claim(job_id, settings)
    assert job is not None and job.attempt == settings.job_max_attempts
    assert lifecycle.lose_training_process(job_id, job.attempt, settings) == JobStatus.FAILED
    row = job_row(settings, job_id)
    assert (row.status, row.error_code) == ("failed", "worker_lost")
    assert (
        row.error_message is not None and "a training process of its device group died" in row.error_message
    )
