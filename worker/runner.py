"""Run one job: claim it, train it with `apl`, publish the model, record how it ended.

Everything the job does is reflected in its row; the Celery message only carried the
id. Expected failures (`apl.errors.AplError`) keep their code and message; anything
else is logged with its traceback and shown to the user as `internal`.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from api.settings import Settings
from apl.errors import AplError
from apl.spec import JobSpec
from worker import state
from worker.callbacks import JobCallback

log = logging.getLogger(__name__)


class JobFailure(Exception):
    """A failure with the code and message the job row gets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def checkpoint_path(settings: Settings, job_id: str) -> Path:
    return settings.checkpoints_dir / job_id / "last.ckpt"


def _heartbeat(job_id: str, settings: Settings, done: threading.Event, lost: threading.Event) -> None:
    """Keep the lease fresh while the job runs (also during model loading and evaluation)."""
    interval = max(0.5, settings.job_lease_seconds / 4)
    while not done.wait(interval):
        try:
            if not state.heartbeat(job_id, settings):
                lost.set()
                return
        except Exception:
            log.exception("heartbeat for job %s failed; retrying", job_id)


def classify(error: BaseException) -> JobFailure:
    """Turn an exception into the code and sentence a person reads in the job."""
    import torch

    if isinstance(error, JobFailure):
        return error
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return JobFailure(
            "out_of_memory",
            "training ran out of memory; lower batch_size, image_size or max_length, or use a smaller model",
        )
    if isinstance(error, AplError):
        return JobFailure(error.code, str(error))
    return JobFailure("internal", "training failed with an internal error; it was logged for the operators")


def _dataset_dir(settings: Settings, dataset_id: str | None) -> Path:
    if dataset_id is None:
        raise JobFailure("dataset_unreadable", "the dataset of this job was deleted")
    path = settings.datasets_dir / dataset_id
    if not (path / "samples.jsonl").is_file():
        raise JobFailure("dataset_unreadable", "the stored files of this job's dataset are missing")
    return path


def _train_and_publish(job: state.ClaimedJob, settings: Settings, lost: threading.Event) -> str:
    from api.db.models import new_id
    from apl.artifacts import publish_result
    from apl.training import TrainConfig, train

    spec = JobSpec.model_validate(job.spec)
    ckpt = checkpoint_path(settings, job.id)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    config = TrainConfig.from_job_spec(
        spec,
        _dataset_dir(settings, job.dataset_id),
        checkpoint_path=ckpt,
        resume_from=ckpt if ckpt.is_file() else None,
    )
    callback = JobCallback(job.id, settings, lost)
    result = train(config, [callback])
    if lost.is_set():
        log.warning("job %s was taken back by the sweeper; dropping this run's result", job.id)
        return "lost"
    if result.stopped:
        state.finish(job.id, "cancelled", settings)
        return "cancelled"
    model_id = new_id()
    relative = Path("artifacts") / f"{model_id}.tar"
    info = publish_result(result, settings.data_dir / relative)
    best = result.best_metrics
    metrics: dict[str, Any] = best.as_metric_point() if best else {}
    metrics["best_epoch"] = result.best_epoch
    metrics["fallback_labels"] = list(result.fallback_labels)
    model = {
        "id": model_id,
        "base_model": spec.base_model,
        "modality": job.dataset_modality or result.model.modality,
        "labels": list(result.labels),
        "thresholds": dict(result.thresholds),
        "metrics": metrics,
        "artifact_path": relative.as_posix(),
        "sha256": info.sha256,
        "size_bytes": info.size_bytes,
    }
    best_metrics = {k: v for k, v in metrics.items() if k != "per_class_ap"}
    if not state.finish_succeeded(job.id, model, best_metrics, settings):
        info.path.unlink(missing_ok=True)  # cancelled or swept meanwhile: keep no orphan file
        return "lost"
    shutil.rmtree(ckpt.parent, ignore_errors=True)
    return "succeeded"


def run_job(job_id: str, settings: Settings) -> str:
    """The whole life of one delivery of a job; returns how it ended (for logs and tests)."""
    job = state.claim(job_id, settings)
    if job is None:
        log.info("job %s is not queued (taken, cancelled or finished); nothing to do", job_id)
        return "skipped"
    log.info("job %s claimed (attempt %d)", job_id, job.attempts)
    done, lost = threading.Event(), threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job_id, settings, done, lost), daemon=True)
    beat.start()
    try:
        outcome = _train_and_publish(job, settings, lost)
    except BaseException as error:
        failure = classify(error)
        if failure.code == "internal":
            log.exception("job %s failed", job_id)
        else:
            log.warning("job %s failed: %s: %s", job_id, failure.code, failure.message)
        state.finish(job_id, "failed", settings, failure.code, failure.message)
        if not isinstance(error, Exception):
            raise
        return "failed"
    finally:
        done.set()
        beat.join(timeout=5)
    log.info("job %s %s", job_id, outcome)
    return outcome
