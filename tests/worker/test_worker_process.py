"""A real worker process (`python -m worker`) on each deployment: SQLite with the
SQLAlchemy broker, and PostgreSQL with Redis. Jobs are rows plus a message, exactly
as the API sends them; the test only reads the database and the data dir."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select

from api.services import jobs as job_service
from apl.artifacts import read_config_from_archive
from core.broker import enqueue_job
from core.db.models import Dataset, Job, JobEvent, MetricPoint
from core.db.session import session_scope
from core.settings import Settings
from tests.apl.synthetic import write_image_dataset, write_text_dataset
from tests.worker.harness import (
    BACKENDS,
    ServiceProcess,
    backend_settings,
    job_row,
    make_dataset,
    make_job,
    make_owner,
    models_of,
    published_models,
    release_backend,
    sha256_of,
    start_worker,
    tiny_text_spec,
    wait_for,
    wait_for_status,
)


@dataclass
class Deployment:
    settings: Settings
    worker: ServiceProcess
    owner_id: str

    def submit(self, dataset_id: str, spec: dict[str, object]) -> str:
        job_id = make_job(self.settings, self.owner_id, dataset_id, spec)
        enqueue_job(job_id, self.settings)
        return job_id

    def text_dataset(self, n: int = 48) -> str:
        return make_dataset(self.settings, self.owner_id, lambda d: write_text_dataset(d, n=n), "text")


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_schema: Path
) -> Iterator[Deployment]:
    """One worker per backend, shared by this module's tests (a start costs seconds)."""
    data_dir = tmp_path_factory.mktemp(f"worker-{request.param}")
    settings = backend_settings(request, request.param, data_dir, sqlite_schema)
    worker = start_worker(settings, data_dir / "worker.log")
    try:
        yield Deployment(settings, worker, make_owner(settings))
        assert worker.terminate() < 15, "an idle worker stops at once"
    finally:
        worker.close()
        release_backend(settings)


def metric_points(settings: Settings, job_id: str) -> list[MetricPoint]:
    with session_scope(settings) as session:
        rows = session.scalars(
            select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.epoch)
        ).all()
        session.expunge_all()
        return list(rows)


def test_a_job_trains_and_publishes_its_model(deployment: Deployment, tiny_bert: str) -> None:
    settings = deployment.settings
    dataset_id = deployment.text_dataset()
    spec = tiny_text_spec(tiny_bert, epochs=2) | {
        "decision": {"policy": "recall_at", "target": 0.8, "min_labels": 1}
    }
    job_id = deployment.submit(dataset_id, spec)

    job = wait_for_status(settings, job_id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", (job.error_code, job.error_message, deployment.worker.log()[-2000:])
    assert job.attempts == 1 and job.error_code is None
    assert job.started_at is not None and job.finished_at is not None and job.finished_at >= job.started_at
    assert job.progress["epoch"] == 2 and job.progress["step"] == job.progress["steps"] > 0

    points = metric_points(settings, job_id)
    assert [p.epoch for p in points] == [1, 2]
    for p in points:
        assert p.map is not None and 0.0 <= p.map <= 1.0
        assert p.train_loss is not None and math.isfinite(p.train_loss)
        assert p.val_loss is not None and math.isfinite(p.val_loss)
        assert set(p.per_class_ap) <= {"animal", "color", "food"}
    assert points[0].step < points[1].step == job.progress["steps"]

    model, published = published_models(settings, job_id)
    assert job.model_id in {row.id for row in published}
    assert model.labels == ["animal", "color", "food"] and set(model.thresholds) == set(model.labels)
    assert model.modality == "text" and model.base_model == tiny_bert
    assert job.best_metrics is not None and 0.0 <= job.best_metrics["map"] <= 1.0
    artifact = settings.data_dir / model.artifact_path
    assert artifact.is_file() and artifact.stat().st_size == model.size_bytes
    assert sha256_of(artifact) == model.sha256
    config = read_config_from_archive(artifact)
    assert config["labels"] == model.labels
    # The job's decision policy and the calibration reach the row, the artifact and the evaluation.
    assert model.decision is not None and model.evaluation is not None
    assert (model.decision["policy"], model.decision["target"], model.decision["min_labels"]) == (
        "recall_at",
        0.8,
        1,
    )
    assert model.decision["temperatures"] == config["calibration"]["temperatures"]
    assert config["decision"]["min_labels"] == 1 and config["thresholds"] == model.thresholds
    assert model.evaluation["decision"]["policy"] == "recall_at"
    assert [e["threshold"] for e in model.evaluation["per_label"]] == [
        model.thresholds[x] for x in model.labels
    ]
    # Published atomically: no temporary or staging files left. The checkpoint goes right after
    # the job reads `succeeded` (not before: a crash in between must not lose the epochs).
    archives = sorted(Path(row.artifact_path).name for row in published)
    assert sorted(p.name for p in settings.files.artifacts.iterdir()) == archives
    wait_for(lambda: not (settings.files.checkpoints / job_id).exists(), 30, "the checkpoint removed")

    # The history: claimed, each epoch evaluated and checkpointed, succeeded with its model.
    with session_scope(settings) as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        # (message events: what the job says besides, e.g. a linear baseline that beat it)
        events = [
            (row.type, row.data.get("epoch"), row.data.get("status")) for row in rows if row.type != "message"
        ]
        epochs = [row for row in rows if row.type == "epoch"]
    assert events == [
        ("status", None, "running"),
        ("epoch", 1, None),
        ("checkpoint", 1, None),
        ("epoch", 2, None),
        ("checkpoint", 2, None),
        ("status", None, "succeeded"),
    ]
    assert all(
        row.data["samples_per_s"] > 0 and row.data["map"] == p.map
        for row, p in zip(epochs, points, strict=True)
    )
    # One log line per epoch with the losses, mAP, F1 and throughput.
    lines = [line for line in deployment.worker.log().splitlines() if f"job {job_id} epoch " in line]
    assert len(lines) == 2 and all(
        "mAP" in line and "macro-F1" in line and "samples/s" in line for line in lines
    )
    assert "epoch 2/2: train loss" in lines[1]


def test_a_redelivered_message_changes_nothing(deployment: Deployment) -> None:
    settings = deployment.settings
    dataset_id = deployment.text_dataset(n=12)
    done = make_job(settings, deployment.owner_id, dataset_id, tiny_text_spec("minilm-l6"))
    with session_scope(settings) as session:
        row = session.get_one(Job, done)
        row.status, row.attempts, row.best_metrics = "succeeded", 1, {"map": 0.75}
    before = job_row(settings, done)

    enqueue_job(done, settings)  # the duplicate, as a broker redelivery would bring it
    # A second message behind it on the same queue; once it is handled, so is the duplicate.
    probe = make_job(settings, deployment.owner_id, dataset_id, tiny_text_spec("minilm-l6"))
    with session_scope(settings) as session:
        session.get_one(Job, probe).dataset_id = None
    enqueue_job(probe, settings)
    assert wait_for_status(settings, probe, ("failed",)).error_code == "dataset_unreadable"

    after = job_row(settings, done)
    assert (after.status, after.attempts, after.best_metrics, after.started_at) == (
        before.status,
        before.attempts,
        before.best_metrics,
        before.started_at,
    )
    assert models_of(settings, done) == [] and metric_points(settings, done) == []


def test_unreadable_data_and_unavailable_models_fail_with_clear_codes(
    deployment: Deployment, tiny_bert: str
) -> None:
    settings = deployment.settings
    files_gone = deployment.text_dataset(n=12)
    corrupt = deployment.text_dataset(n=12)
    row_gone = deployment.text_dataset(n=12)
    images = make_dataset(
        settings, deployment.owner_id, lambda d: write_image_dataset(d, n=8, size=16), "image"
    )
    owner, spec = deployment.owner_id, tiny_text_spec(tiny_bert)
    jobs = {
        make_job(settings, owner, files_gone, spec): ("dataset_unreadable", "missing"),
        make_job(settings, owner, corrupt, spec): ("dataset_unreadable", "not valid JSON"),
        make_job(settings, owner, row_gone, spec): ("dataset_unreadable", "deleted"),
        make_job(settings, owner, images, {"base_model": "timm:no_such_network"}): (
            "model_unavailable",
            "no_such_network",
        ),
    }
    # Break the data after the jobs were accepted, as a deletion or a disk fault would.
    for path in (settings.files.dataset(files_gone)).iterdir():
        path.unlink()
    samples = settings.files.dataset(corrupt) / "samples.jsonl"
    samples.write_text(samples.read_text().replace("}", "", 1))
    with session_scope(settings) as session:
        session.execute(delete(Dataset).where(Dataset.id == row_gone))
    for job_id in jobs:
        enqueue_job(job_id, settings)

    for job_id, (code, words) in jobs.items():
        job = wait_for_status(settings, job_id, ("failed", "succeeded"))
        assert (job.status, job.error_code) == ("failed", code), job.error_message
        message = job.error_message or ""
        assert words in message
        assert "Traceback" not in message and str(settings.data_dir) not in message
        assert models_of(settings, job_id) == []
    assert sorted(json.loads((settings.files.dataset(corrupt) / "labels.json").read_text())) == [
        "animal",
        "color",
        "food",
    ]


def test_cancel_stops_a_running_job_at_its_next_step(deployment: Deployment, tiny_bert: str) -> None:
    settings = deployment.settings
    job_id = deployment.submit(deployment.text_dataset(), tiny_text_spec(tiny_bert, epochs=200))
    wait_for(
        lambda: (row := job_row(settings, job_id)).status == "running" and row.progress["step"] > 0,
        120,
        "the job to take its first steps",
    )
    with session_scope(settings) as session:
        job_service.cancel(session, deployment.owner_id, job_id, settings=settings)  # what POST /cancel does
    asked = time.monotonic()
    job = wait_for_status(settings, job_id, ("cancelled", "failed", "succeeded"), timeout=30)
    waited = time.monotonic() - asked
    assert job.status == "cancelled", job.error_message
    assert waited < 10, f"cancel took {waited:.1f} s"
    assert job.finished_at is not None and job.error_code is None and job.model_id is None
    assert job.progress["epoch"] < 200
    assert models_of(settings, job_id) == []
    wait_for(lambda: not (settings.files.checkpoints / job_id).exists(), 30, "the checkpoint removed")


def test_a_requeue_at_shutdown_is_logged_as_one_line() -> None:
    """Celery logs a rejected task with exc_info; the worker's filter keeps the line, drops the traceback."""
    import logging

    from celery.exceptions import Reject

    from worker.app import ExpectedRejectFilter

    def record(error: BaseException) -> logging.LogRecord:
        try:
            raise error
        except BaseException:
            import sys

            return logging.LogRecord(
                "celery.app.trace", logging.WARNING, __file__, 1, "rejected", (), sys.exc_info()
            )

    requeued = record(Reject("the worker is shutting down", requeue=True))
    assert ExpectedRejectFilter().filter(requeued) and requeued.exc_info is None
    assert "Traceback" not in logging.Formatter().format(requeued)
    dropped = record(Reject("bad message", requeue=False))
    assert ExpectedRejectFilter().filter(dropped) and dropped.exc_info is not None  # not expected: kept
    failure = record(RuntimeError("boom"))
    assert ExpectedRejectFilter().filter(failure) and "Traceback" in logging.Formatter().format(failure)


def test_a_job_with_a_test_split_stores_its_test_predictions_and_metrics(
    deployment: Deployment, tiny_bert: str
) -> None:
    from apl.data import load_stored_dataset, split_test_indices
    from apl.predictions import SplitPredictions

    settings = deployment.settings
    dataset_id = deployment.text_dataset(n=60)
    job_id = deployment.submit(dataset_id, tiny_text_spec(tiny_bert, epochs=1) | {"test_fraction": 0.25})
    job = wait_for_status(settings, job_id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", (job.error_code, job.error_message, deployment.worker.log()[-2000:])
    assert job.best_metrics is not None
    test = job.best_metrics["test"]
    assert test["source"] == "fraction" and test["num_samples"] == 15
    stored = SplitPredictions.load(settings.files.predictions(job_id, "test", job.attempts))
    _, _, expected = split_test_indices(
        load_stored_dataset(settings.files.dataset(dataset_id)).targets, 0.25, 0.2, 0
    )
    assert np.array_equal(stored.indices, expected)
    assert (stored.map, stored.macro_f1, stored.micro_f1) == (test["map"], test["macro_f1"], test["micro_f1"])
    model, _ = published_models(settings, job_id)
    assert model.metrics["test"] == test


def test_a_worker_gives_torch_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--concurrency N` hands each process cores / N threads instead of every process taking all."""
    import torch

    from worker.app import _configure_threads
    from worker.supervisor import EmbeddedWorker

    before = torch.get_num_threads()
    try:
        _configure_threads(1)
        assert torch.get_num_threads() == 1
        _configure_threads(None)  # None: torch keeps what it has (OMP_NUM_THREADS or its own)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "--torch-threads=3" in EmbeddedWorker(torch_threads=3)._command
    assert not any(arg.startswith("--torch-threads") for arg in EmbeddedWorker()._command)
