"""What `train` takes and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apl.baseline import JobBaselines
from apl.calibrators import Calibration
from apl.metrics import EpochMetrics
from apl.models import BuiltModel
from apl.predictions import SplitPredictions
from apl.spec import CalibrationMethod, DecisionSpec, Hyperparameters, JobSpec, LossSpec
from apl.training.distributed import DistributedSetup

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Paths are plain arguments: `apl` never looks anything up itself."""

    #: The normalized dataset directory (samples.jsonl, labels.json, images/).
    dataset_dir: Path
    base_model: str
    loss: LossSpec = field(default_factory=LossSpec)
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    #: Where each epoch's checkpoint is written (atomically); None: no checkpoints.
    checkpoint_path: Path | None = None
    #: A checkpoint of this same configuration to continue from.
    resume_from: Path | None = None
    device: Device = "auto"
    #: DataLoader worker processes for image decoding (text always tokenizes in-process).
    num_workers: int = 0
    #: Whether `hf:<hub id>` may be fetched from the network.
    allow_download: bool = False
    #: The threshold policy and min_labels applied after training (they never change the weights).
    decision: DecisionSpec = field(default_factory=DecisionSpec)
    #: Per-label calibration chosen on held-out folds of the validation split (`apl.calibrators`).
    calibration: CalibrationMethod = "auto"
    #: Hold this fraction out as a test split (`apl.data.split_test_indices`); scored once at the end.
    test_fraction: float | None = None
    #: Or score the end result on this normalized dataset (same labels and modality) instead.
    test_dataset_dir: Path | None = None
    #: False for a search trial: the test split is held out (the same train/validation split as
    #: the sweep's replicates) but never predicted, so no search decision can have seen it.
    score_test: bool = True
    #: False for a search trial too: its one use is the search value, and the replicates of the
    #: same split fit the baselines the leaderboard shows, so a trial would only repeat them.
    fit_baselines: bool = True
    #: This process's rank in a data-parallel group a launcher started; None: one process.
    distributed: DistributedSetup | None = None

    @classmethod
    def from_job_spec(
        cls,
        spec: JobSpec,
        dataset_dir: Path,
        *,
        checkpoint_path: Path | None = None,
        resume_from: Path | None = None,
        device: Device = "auto",
        num_workers: int = 0,
        allow_download: bool = False,
        test_dataset_dir: Path | None = None,
        distributed: DistributedSetup | None = None,
    ) -> TrainConfig:
        """`test_dataset_dir` is where `spec.test_dataset_id` is stored (the caller knows the layout)."""
        if (spec.test_dataset_id is None) != (test_dataset_dir is None):
            raise ValueError("test_dataset_dir is needed exactly when the spec names a test_dataset_id")
        return cls(
            dataset_dir=Path(dataset_dir),
            base_model=spec.base_model,
            loss=spec.loss,
            hyperparameters=spec.hyperparameters,
            checkpoint_path=checkpoint_path,
            resume_from=resume_from,
            device=device,
            num_workers=num_workers,
            allow_download=allow_download,
            decision=spec.decision,
            calibration=spec.calibration,
            test_fraction=spec.test_fraction,
            test_dataset_dir=Path(test_dataset_dir) if test_dataset_dir is not None else None,
            distributed=distributed,
        )


@dataclass
class TrainResult:
    """The outcome of `train`.

    `model` holds the best epoch's weights, or the last ones if no epoch was evaluated.
    `thresholds` apply to calibrated scores (`sigmoid(logit / temperature)`); a run that
    was stopped, or evaluated no epoch, has no temperatures and no evaluation.
    """

    config: TrainConfig
    model: BuiltModel
    labels: list[str]
    #: Per-label decision thresholds chosen after training with the job's policy on calibrated
    #: validation scores (the fallback for every label if no epoch was evaluated).
    thresholds: dict[str, float]
    fallback_labels: list[str]
    best_metrics: EpochMetrics | None
    history: list[EpochMetrics]
    #: True when a callback asked to stop (cancel); the run did not finish.
    stopped: bool
    #: True when early stopping ended the run (a normal, successful finish).
    early_stopped: bool
    epochs_completed: int
    device: str
    precision: str
    #: Per-label temperatures (1.0 for labels not temperature-scaled); empty when not finalized.
    temperatures: dict[str, float] = field(default_factory=dict)
    #: Every label's calibrator (`apl.calibrators`), None when not finalized.
    calibrator: Calibration | None = None
    #: Per label: "tuned" or "fallback" (apl.thresholds).
    threshold_sources: dict[str, str] = field(default_factory=dict)
    #: The Evaluation document of the validation split (apl.evaluation), or None.
    evaluation: dict[str, Any] | None = None
    #: The best weights scored once on the test split (None without one, or when stopped).
    test: SplitPredictions | None = None
    #: The final model's out-of-sample validation predictions (unknown cells in `known`), from
    #: which the worker ranks suspect labels (`apl.label_issues`); None when stopped.
    validation: SplitPredictions | None = None
    #: The label frequencies a frequency-aware loss (dbl) was built from: `num_samples` and
    #: `label_counts` (known positives per label) of the training split; None for other losses.
    loss_frequencies: dict[str, Any] | None = None
    #: Why training ended: "epochs", "no_improvement", "max_steps" or "stopped" (apl.training.budget).
    stop_reason: str | None = None
    #: The same as a sentence for the job.
    stop_message: str | None = None
    #: How the head started: "linear_probe" (fitted before training, LP-FT) or "random".
    head_init: str = "random"
    #: "fine_tuned", or "linear_probe" for the probe's own result (`apl.training.baselines`).
    kind: str = "fine_tuned"
    #: The job's baselines next to this model (None when stopped or not finalized).
    baselines: JobBaselines | None = None
    #: The linear probe's result, present when it beats this model on validation mAP.
    probe: TrainResult | None = None

    @property
    def best_epoch(self) -> int | None:
        return self.best_metrics.epoch if self.best_metrics else None
