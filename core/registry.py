"""Registering a trained model: the Model row's fields from a training result, and its insert.

The worker publishes every model this way; the predict benchmark and the test helpers
register theirs through the same two functions, so a model row always holds the same
fields however it was made. Torch-free: the result is only read, never imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.db.models import Job, Model, new_id, utcnow
from core.files import DataFiles
from core.jobs.status import JobStatus

if TYPE_CHECKING:
    from apl.artifacts import ArtifactInfo
    from apl.training import TrainResult


@dataclass(frozen=True)
class ModelRecord:
    """Everything a Model row holds except its owner and job."""

    id: str
    base_model: str
    modality: str
    labels: list[str]
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    artifact_path: str
    sha256: str
    size_bytes: int
    #: Policy, target, min_labels, calibration method, temperatures, threshold sources (or None).
    decision: dict[str, Any] | None = None
    #: The Evaluation document of the validation split, without `model_id` (or None).
    evaluation: dict[str, Any] | None = None

    def best_metrics(self) -> dict[str, Any]:
        """The job's `best_metrics`: the model's metrics without the per-label APs."""
        return {key: value for key, value in self.metrics.items() if key != "per_class_ap"}


def model_metrics(result: TrainResult) -> dict[str, Any]:
    """The best epoch's metric point, how training ended, which thresholds fell back, and the test split."""
    best = result.best_metrics
    metrics: dict[str, Any] = best.as_metric_point() if best else {}
    metrics["best_epoch"] = result.best_epoch
    metrics["epochs_completed"] = result.epochs_completed
    metrics["fallback_labels"] = list(result.fallback_labels)
    if result.loss_frequencies is not None:
        # The training split's label frequencies the dbl loss was built from.
        metrics["loss_frequencies"] = result.loss_frequencies
    if result.test is not None:
        # Scored once at the best epoch on the held-out split; the sweep leaderboard reads these.
        metrics["test"] = result.test.metrics()
    metrics["kind"] = getattr(result, "kind", "fine_tuned")
    if metrics["kind"] == "fine_tuned":
        # Where fine-tuning started: the linear probe as the head (LP-FT), or a random head.
        metrics["head_init"] = getattr(result, "head_init", "random")
    if getattr(result, "stop_reason", None) is not None:
        # Why training ended (apl.training.budget): the epochs asked for, no improvement, the step budget.
        metrics["stop_reason"] = result.stop_reason
        metrics["stop_message"] = result.stop_message
    baselines = getattr(result, "baselines", None)
    if baselines is not None:
        # The job's linear baselines beside the model (apl.training.baselines), and what they say.
        metrics["baselines"] = baselines.as_dict()
        metrics["warnings"] = list(baselines.warnings)
    return metrics


def model_decision(result: TrainResult) -> dict[str, Any] | None:
    """How the model decides: what `Model.decision` holds; None for a result that was not finalized."""
    if not result.temperatures:
        return None
    return {
        **result.config.decision.model_dump(mode="json"),
        "calibration": result.config.calibration,
        "temperatures": {label: float(t) for label, t in result.temperatures.items()},
        "threshold_sources": dict(result.threshold_sources),
        "calibration_methods": (
            {label: c.method for label, c in zip(result.labels, result.calibrator.labels, strict=True)}
            if result.calibrator is not None
            else {}
        ),
    }


def model_record(
    result: TrainResult,
    info: ArtifactInfo,
    *,
    model_id: str,
    artifact_path: str,
    base_model: str,
    modality: str | None = None,
) -> ModelRecord:
    """The row for a result whose archive `info` is already in place at `artifact_path`."""
    return ModelRecord(
        id=model_id,
        base_model=base_model,
        modality=modality or result.model.modality,
        labels=list(result.labels),
        thresholds={label: float(value) for label, value in result.thresholds.items()},
        metrics=model_metrics(result),
        artifact_path=artifact_path,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        decision=model_decision(result),
        evaluation=result.evaluation,
    )


def publish_model(
    result: TrainResult, files: DataFiles, *, base_model: str, modality: str | None = None
) -> ModelRecord:
    """Write the result's artifact archive into the data dir (temp file, fsync, rename) and describe it.

    Imports the training stack (torch) when called: only processes that trained a model do.
    """
    from apl.artifacts import publish_result

    model_id = new_id()
    info = publish_result(result, files.artifact(model_id))
    return model_record(
        result,
        info,
        model_id=model_id,
        artifact_path=files.artifact_relative(model_id),
        base_model=base_model,
        modality=modality,
    )


def insert_model(
    session: Session, record: ModelRecord, *, owner_id: str, job_id: str, point_job: bool = True
) -> Model:
    """Add the Model row and point its job at it (the caller's transaction commits both).

    A job may publish two models (its fine-tuned model and the linear probe that beat it,
    apl.training.baselines); `point_job=False` adds one without making it the job's model.
    """
    row = Model(owner_id=owner_id, job_id=job_id, **asdict(record))
    session.add(row)
    session.flush()
    if point_job:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(model_id=record.id)
            .execution_options(synchronize_session=False)
        )
    return row


def insert_finished_job(session: Session, record: ModelRecord, *, owner_id: str, spec: dict[str, Any]) -> Job:
    """A succeeded job with its Model row, for a model trained outside a worker (benchmarks, tests)."""
    now = utcnow()
    job = Job(
        owner_id=owner_id,
        dataset_id=None,
        status=JobStatus.SUCCEEDED,
        spec=spec,
        progress={"epoch": 1, "epochs": 1, "step": 1, "steps": 1},
        best_metrics=record.best_metrics(),
        attempts=1,
        started_at=now,
        finished_at=now,
    )
    session.add(job)
    session.flush()
    insert_model(session, record, owner_id=owner_id, job_id=job.id)
    return job
