"""Run one job: claim it, train it with `apl`, publish the model, record how it ended.

Everything the job does is reflected in its row; the Celery message only carried the
id. Expected failures (`apl.errors.AplError`, missing data, out of memory) get their
code and a sentence a person understands; anything else is logged with its
traceback for the operators and shown to the user as `internal`.

How a run ends (the return value, a `core.jobs.status.RunOutcome`, for logs and tests):
    succeeded   the artifact is published and the Model row written
    failed      the job row says why (error code and message)
    cancelled   a cancel request stopped it (or arrived before the model was kept)
    (a sweep's search trial ends `succeeded` with no model, complete or pruned; its sweep
    then advances: core.sweeps.search)
    released    the worker is shutting down; the job is queued again and resumes
                from its last epoch checkpoint on the next worker
    lost        the lease was taken back by a sweeper; another attempt owns the job
    skipped     a redelivered or stale message: the job was not queued
    requeued    a training process of a multi-device job died; queued again like a lost worker

A job with `hyperparameters.devices` > 1 trains as a group of processes (worker.group,
one per device, started by torch's launcher); each runs `run_rank`, and rank 0 does what
`_run_claimed` does for a single process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apl.errors import AplError, CheckpointError
from apl.formats import SAMPLES_FILE
from apl.spec import JobSpec
from core.broker import BrokerUnavailable
from core.db.session import session_scope
from core.jobs import dispatch, lifecycle
from core.jobs.status import JobStatus, RunOutcome
from core.objects import StorageUnavailable
from core.registry import publish_model
from core.settings import Settings
from core.storage import is_storage_full
from core.sweeps import search
from core.webhooks.notify import notify_job_finished
from worker.callbacks import JobCallback
from worker.label_issues import write_label_issues

if TYPE_CHECKING:
    from apl.training.distributed import DistributedSetup

log = logging.getLogger(__name__)

#: Ids of the jobs this process is running; the lease sweeper in this process leaves them alone.
ACTIVE_JOBS: set[str] = set()

#: A few words in front of an `apl` message, so the sentence says what it is about.
_CONTEXT = {
    "dataset_unreadable": "the dataset cannot be used for training: ",
    "model_unavailable": "the base model cannot be loaded: ",
    "device_unavailable": "the training device is not available: ",
}
_HINTS = {"training_diverged": "; try a lower learning_rate or another loss"}


class JobFailure(Exception):
    """A failure with the code and message the job row gets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _discard_checkpoint(settings: Settings, job_id: str) -> None:
    settings.storage.discard_checkpoint(job_id)


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def classify(error: BaseException) -> JobFailure:
    """Turn an exception into the code and sentence a person reads in the job."""
    if isinstance(error, JobFailure):
        return error
    if is_storage_full(error):  # a checkpoint, an artifact, the dataset read: however the write failed
        return JobFailure("storage_full", "the server ran out of disk space; the operators must free some")
    if isinstance(error, StorageUnavailable):
        return JobFailure(
            "storage_unavailable",
            "the object storage did not answer (after retries); start the job again once it is back",
        )
    if _is_out_of_memory(error):
        return JobFailure(
            "out_of_memory",
            "training ran out of memory; lower batch_size, image_size or max_length, or use a smaller model",
        )
    if isinstance(error, AplError):
        message = str(error) or "training failed"
        return JobFailure(error.code, _CONTEXT.get(error.code, "") + message + _HINTS.get(error.code, ""))
    return JobFailure("internal", "training failed with an internal error; it was logged for the operators")


def _dataset_dir(settings: Settings, dataset_id: str | None, which: str = "dataset") -> Path:
    if dataset_id is None:
        raise JobFailure("dataset_unreadable", f"the {which} of this job was deleted")
    path = settings.storage.dataset_dir(dataset_id)  # s3: materialised once per host (node-local cache)
    if path is None or not (path / SAMPLES_FILE).is_file():
        raise JobFailure("dataset_unreadable", f"the stored files of this job's {which} are missing")
    return path


def _heartbeat(
    job: lifecycle.ClaimedJob, settings: Settings, done: threading.Event, lost: threading.Event
) -> None:
    """Keep the lease fresh while the job runs (also during model loading and evaluation)."""
    interval = max(0.25, settings.job_lease_seconds / 4)
    while not done.wait(interval):
        try:
            if not lifecycle.heartbeat(job.id, job.attempt, settings):
                log.warning("job %s is no longer ours (attempt %d); stopping it", job.id, job.attempt)
                lost.set()
                return
        except Exception:
            log.warning("heartbeat for job %s failed; retrying", job.id, exc_info=True)


def release(job: lifecycle.ClaimedJob, settings: Settings) -> None:
    """Give the job back to the queue (worker shutdown); it resumes from its checkpoint."""
    if lifecycle.release(job.id, job.attempt, settings):
        send_again(job.id, settings)


def send_again(job_id: str, settings: Settings) -> None:
    """Send the message of a job queued again; the reconciler sends it when the broker cannot."""
    try:
        with session_scope(settings) as session:
            dispatch.send(session, settings, [job_id])
    except BrokerUnavailable as error:
        log.warning("could not queue job %s again (%s); the reconciler will", job_id, error)


def _train(
    job: lifecycle.ClaimedJob,
    spec: JobSpec,
    settings: Settings,
    callback: JobCallback | None,
    distributed: DistributedSetup | None = None,
) -> Any:
    """Train the job; `callback` None for the ranks other than 0, which never touch the database."""
    from apl.training import TrainConfig, train

    dataset_dir = _dataset_dir(settings, job.dataset_id)
    test_dir = _dataset_dir(settings, spec.test_dataset_id, "test dataset") if spec.test_dataset_id else None
    ckpt = settings.storage.scratch.checkpoint(job.id)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    resume = settings.storage.fetch_checkpoint(job.id)  # s3: the last one any host stored
    callbacks = [callback] if callback is not None else []
    if resume is not None and callback is not None:
        log.info("job %s resumes from its last checkpoint", job.id)
        lifecycle.record_message(
            job.id, job.attempt, "resuming from the last epoch checkpoint", settings, level="info"
        )

    def config(resume_from: Path | None) -> TrainConfig:
        built = TrainConfig.from_job_spec(
            spec,
            dataset_dir,
            checkpoint_path=ckpt,
            resume_from=resume_from,
            allow_download=settings.allow_model_download,
            test_dataset_dir=test_dir,
            distributed=distributed,
        )
        trial = job.role == search.TRIAL
        return replace(built, score_test=not trial, fit_baselines=not trial)

    try:
        return train(config(resume), callbacks)
    except CheckpointError:
        if resume is None:
            raise
        if callback is None:  # the other ranks follow rank 0, which says why and removes the file
            return train(config(None), callbacks)
        log.warning("the checkpoint of job %s cannot be used; starting afresh", job.id, exc_info=True)
        lifecycle.record_message(
            job.id,
            job.attempt,
            "the last checkpoint cannot be used; training starts afresh",
            settings,
            level="warning",
        )
        ckpt.unlink(missing_ok=True)
        return train(config(None), callbacks)


def _publish(job: lifecycle.ClaimedJob, spec: JobSpec, result: Any, settings: Settings) -> RunOutcome:
    """Write the artifact and the test predictions (temp file, fsync, rename), then the Model row.

    The predictions are on disk before the job reads `succeeded`, so a sweep leaderboard
    that sees the job finished can always resample its test split.
    """
    storage = settings.storage
    record = publish_model(result, storage.scratch, base_model=spec.base_model, modality=job.dataset_modality)
    written = [record.artifact_path]
    probe = None
    try:
        storage.publish(storage.scratch.artifact(record.id))
        _publish_extras(job, spec, result, settings, record.id, written)
        if result.probe is not None:  # the linear probe beat the fine-tuned model: published too, and chosen
            probe = publish_model(
                result.probe, storage.scratch, base_model=spec.base_model, modality=job.dataset_modality
            )
            written.append(probe.artifact_path)
            storage.publish(storage.scratch.artifact(probe.id))
            _publish_label_issues(spec, result.probe.validation, settings, probe.id, written)
        outcome = lifecycle.finish_succeeded(job.id, job.attempt, record, settings, probe)
    except BaseException:
        _forget(settings, written)
        raise
    if outcome != RunOutcome.SUCCEEDED:
        _forget(settings, written)  # cancelled or taken back meanwhile: keep no orphan file
    return outcome


def _publish_extras(
    job: lifecycle.ClaimedJob,
    spec: JobSpec,
    result: Any,
    settings: Settings,
    model_id: str,
    written: list[str],
) -> None:
    """The test predictions and the suspect-label ranking, each stored once complete; `written`
    gets the layout path of each, so a failure later removes them again."""
    storage = settings.storage
    if result.test is not None:
        predictions = storage.scratch.predictions(job.id, result.test.split, job.attempt)
        result.test.save(predictions)
        written.append(storage.relative(predictions))
        storage.publish(predictions)
    _publish_label_issues(spec, result.validation, settings, model_id, written)


def _publish_label_issues(
    spec: JobSpec, validation: Any, settings: Settings, model_id: str, written: list[str]
) -> None:
    """Rank the model's suspect labels and store the ranking; never fails the job (logged when it cannot)."""
    if validation is None:
        return
    storage = settings.storage
    issues = storage.scratch.label_issues(model_id)
    dataset_dir = _dataset_dir(settings, spec.dataset_id)
    if write_label_issues(issues, validation, dataset_dir, model_id=model_id, dataset_id=spec.dataset_id):
        written.append(storage.relative(issues))
        storage.publish(issues)


def _forget(settings: Settings, written: list[str]) -> None:
    try:
        settings.storage.remove(*written)
    except StorageUnavailable:
        log.warning("could not remove the stored outputs %s; storage is unavailable", written)


def _run_claimed(
    job: lifecycle.ClaimedJob,
    settings: Settings,
    lost: threading.Event,
    distributed: DistributedSetup | None = None,
) -> RunOutcome:
    spec = JobSpec.model_validate(job.spec)
    callback = JobCallback(job, settings, lost)
    if distributed is not None and distributed.rank != 0:
        _train(job, spec, settings, None, distributed)
        return RunOutcome.TRAINED
    result = _train(job, spec, settings, callback, distributed)
    if lost.is_set() or callback.stop_reason == "lost":
        log.warning("job %s was taken back by the lease sweep; dropping this run", job.id)
        return RunOutcome.LOST
    if callback.stop_reason == "cancel" or (result.stopped and lifecycle.cancel_requested(job.id, settings)):
        return cancelled(job, settings)
    if job.role == search.TRIAL and (callback.stop_reason == "pruned" or not result.stopped):
        state = "pruned" if callback.stop_reason == "pruned" else "complete"
        return lifecycle.finish_without_model(
            job.id, job.attempt, search.outcome(settings, job.id, state), settings
        )
    if result.stopped:  # warm shutdown of this worker
        release(job, settings)
        return RunOutcome.RELEASED
    return _publish(job, spec, result, settings)


def cancelled(job: lifecycle.ClaimedJob, settings: Settings) -> RunOutcome:
    """End the job cancelled as a cancel request asked; LOST when it is no longer this attempt's."""
    ended = lifecycle.finish(job.id, job.attempt, JobStatus.CANCELLED, settings)
    return RunOutcome.CANCELLED if ended else RunOutcome.LOST


def _advance_search(settings: Settings, job_id: str) -> None:
    """The trial ended: its sweep asks for the next trials, or starts its replicates.

    A failure here is logged, never the job's: every worker's lease sweep advances
    waiting searches too.
    """
    try:
        search.advance_for_job(settings, job_id)
    except Exception:
        log.warning("could not advance the search of job %s; the lease sweep will", job_id, exc_info=True)


def run_rank(job: lifecycle.ClaimedJob, settings: Settings, distributed: DistributedSetup) -> RunOutcome:
    """One rank of a multi-device job (worker.rank); rank 0 ends the run as `_run_claimed` does."""
    return _run_claimed(job, settings, threading.Event(), distributed)


def _run_here_or_as_group(job: lifecycle.ClaimedJob, settings: Settings, lost: threading.Event) -> RunOutcome:
    """In this process, or as a group of one process per device (worker.group)."""
    from worker.devices import TooManyDevices, group_size, local_devices
    from worker.group import run_group

    spec = JobSpec.model_validate(job.spec)
    try:
        size = group_size(spec.hyperparameters, local_devices(settings))
    except TooManyDevices as error:
        raise JobFailure("devices_unavailable", str(error)) from error
    if size == 1:
        return _run_claimed(job, settings, lost)
    return run_group(job, settings, lost, size)


def run_job(job_id: str, settings: Settings) -> RunOutcome:
    """The whole life of one delivery of a job; returns how it ended (see the module docstring)."""
    job = lifecycle.claim(job_id, settings)
    if job is None:
        log.info("job %s is not queued (taken, cancelled or finished); nothing to do", job_id)
        return RunOutcome.SKIPPED
    log.info("job %s claimed (attempt %d)", job_id, job.attempt)
    ACTIVE_JOBS.add(job_id)
    done, lost = threading.Event(), threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job, settings, done, lost), daemon=True)
    beat.start()
    try:
        outcome = _run_here_or_as_group(job, settings, lost)
    except (KeyboardInterrupt, SystemExit):
        log.warning("job %s interrupted; giving it back to the queue", job_id)
        release(job, settings)
        raise
    except Exception as error:
        failure = classify(error)
        if failure.code == "internal":
            log.exception("job %s failed", job_id)
        else:
            log.warning("job %s failed: %s: %s", job_id, failure.code, failure.message)
        ended = lifecycle.finish(
            job_id, job.attempt, JobStatus.FAILED, settings, failure.code, failure.message
        )
        outcome = RunOutcome.FAILED if ended else RunOutcome.LOST
    finally:
        done.set()
        beat.join(timeout=5)
        ACTIVE_JOBS.discard(job_id)
    if outcome.ended_job:
        _discard_checkpoint(settings, job_id)
        notify_job_finished(settings, job_id)
        if job.role == search.TRIAL:
            _advance_search(settings, job_id)
    log.info("job %s %s", job_id, outcome)
    return outcome
