"""Typed results: the contract's Dataset, Job, MetricPoint, Model, Prediction, Sweep and Leaderboard.

They ignore fields they do not know, so a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.jobs.status import FINAL_STATUSES, JobStatus


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Dataset(_Result):
    id: str
    name: str
    modality: Literal["text", "image"]
    format: str
    num_samples: int
    labels: list[str]
    label_counts: dict[str, int]
    label_cardinality: float
    size_bytes: int
    sha256: str
    created_at: datetime
    warnings: list[str] = Field(default_factory=list)
    upload_options: dict[str, str] = Field(default_factory=dict)
    #: Label cells the upload marked unknown, in all and per label (0 and {} on older servers).
    unknown_cells: int = 0
    unknown_counts: dict[str, int] = Field(default_factory=dict)


class JobProgress(_Result):
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0


class JobError(_Result):
    code: str
    message: str


class JobSpec(_Result):
    """The spec as the server stored it: every default and loss preset filled in."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dataset_id: str
    base_model: str
    loss: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] = Field(default_factory=dict)
    calibration: str | None = None
    webhook_url: str | None = None


class Job(_Result):
    id: str
    name: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    status: JobStatus
    spec: JobSpec
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    best_metrics: dict[str, Any] | None = None
    model_id: str | None = None
    error: JobError | None = None
    queue_position: int | None = None
    cancel_requested: bool = False
    attempts: int = 0
    sweep_id: str | None = None
    role: str | None = None
    warnings: list[str] = Field(default_factory=list)

    @property
    def comparison(self) -> str | None:
        """E.g. "fine-tuned 0.710 vs linear probe 0.640 vs TF-IDF 0.630 (validation mAP)"."""
        baselines = (self.best_metrics or {}).get("baselines")
        return baselines.get("comparison") if isinstance(baselines, dict) else None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class MetricPoint(_Result):
    epoch: int
    step: int
    train_loss: float | None = None
    val_loss: float | None = None
    map: float | None = None
    micro_f1: float | None = None
    macro_f1: float | None = None
    per_class_ap: dict[str, float | None] = Field(default_factory=dict)
    time_s: float = 0.0


class HistoryEvent(_Result):
    """One entry of a job's stored history (status change, epoch, checkpoint, message)."""

    id: int
    job_id: str
    created_at: datetime
    type: str
    level: str = "info"
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Checkpoint(_Result):
    epoch: int
    step: int | None = None
    attempt: int | None = None
    created_at: datetime
    metrics: dict[str, float | None] = Field(default_factory=dict)
    on_disk: bool = False
    best: bool = False


class Artifact(_Result):
    sha256: str
    size_bytes: int


class Model(_Result):
    id: str
    job_id: str
    #: Yours (`client.models.rename`), else the job's name; None when neither has one.
    name: str | None = None
    #: What tells one model from another in a list: its job's dataset, loss, sweep and role.
    dataset_id: str | None = None
    dataset_name: str | None = None
    loss: str | None = None
    sweep_id: str | None = None
    role: str | None = None
    base_model: str
    modality: Literal["text", "image"]
    labels: list[str]
    thresholds: dict[str, float]
    metrics: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] | None = None
    artifact: Artifact
    created_at: datetime
    kind: str = "fine_tuned"
    comparison: str | None = None
    warnings: list[str] = Field(default_factory=list)


class Prediction(_Result):
    labels: list[str]
    scores: dict[str, float]
    #: The labels in `labels` that only `min_labels` brought in.
    added_by_min_labels: list[str] = Field(default_factory=list)


class BaseModelDefaults(_Result):
    """What a job for the base model trains with where its spec leaves the field out."""

    learning_rate: float
    epochs: int
    batch_size: int
    image_size: int | None = None
    max_length: int | None = None


class BaseModelEntry(_Result):
    name: str
    modality: Literal["text", "image"]
    family: str
    pretrained: bool
    description: str = ""
    defaults: BaseModelDefaults | None = None


class WebhookSecret(_Result):
    secret: str
    signature_header: str = "X-Aplserve-Signature"
    timestamp_header: str = "X-Aplserve-Timestamp"


T = TypeVar("T")


class LabelIssue(_Result):
    """One validation sample of a model's suspect-label ranking (rank 1 = most suspect)."""

    rank: int
    index: int
    score: float
    flagged: bool
    given_labels: list[str]
    unknown_labels: list[str] = Field(default_factory=list)
    #: [{"label", "given", "score"}]: annotated labels the model decides the other way.
    disagreements: list[dict[str, Any]] = Field(default_factory=list)
    text: str | None = None
    image: str | None = None


class LabelIssuePage(_Result):
    """One page of GET /v1/models/{id}/label-issues; `next_cursor` continues it."""

    model_id: str
    dataset_id: str | None = None
    split: str = "validation"
    num_samples: int
    num_flagged: int = 0
    method: str = ""
    items: list[LabelIssue]
    next_cursor: str | None = None


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[T]
    next_cursor: str | None = None


class SweepWinner(_Result):
    candidate: dict[str, Any]
    model_id: str | None = None
    job_id: str | None = None


class SweepProgress(_Result):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class TrialProgress(_Result):
    total: int = 0
    done: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0


class Trial(_Result):
    """One search trial: its candidate, params, state and per-epoch validation values."""

    number: int
    candidate: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    state: Literal["running", "complete", "pruned", "failed"]
    values: list[float] = Field(default_factory=list)
    value: float | None = None
    job_id: str


class Sweep(_Result):
    """A loss tournament; its status follows its child jobs (`job_ids`)."""

    id: str
    status: JobStatus
    spec: dict[str, Any]
    job_ids: list[str] = Field(default_factory=list)
    created_at: datetime
    finished_at: datetime | None = None
    winner: SweepWinner | None = None
    progress: SweepProgress = Field(default_factory=SweepProgress)
    error: JobError | None = None
    cancel_requested: bool = False
    phase: Literal["search", "replicate"] | None = None
    trials: TrialProgress | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class SeedResult(_Result):
    seed: int
    job_id: str
    value: float
    map: float
    macro_f1: float
    micro_f1: float


class LeaderboardRow(_Result):
    candidate: dict[str, Any]
    label: str = ""
    n: int
    mean: float | None = None
    sd: float | None = None
    ci95: list[float] | None = None
    per_seed: list[SeedResult] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    search_value: float | None = None


class BaselineRow(_Result):
    """A linear baseline on the sweep's test splits (marked `baseline`; never in the verdict)."""

    baseline: str
    label: str = ""
    n: int
    mean: float | None = None
    sd: float | None = None
    ci95: list[float] | None = None
    per_seed: list[SeedResult] = Field(default_factory=list)


class Comparison(_Result):
    candidate: dict[str, Any]
    versus: dict[str, Any]
    delta: float
    delta_ci95: list[float]


class LeaderboardWinner(Comparison):
    model_id: str | None = None
    job_id: str | None = None
    seed: int | None = None


class Leaderboard(_Result):
    """Per candidate mean, sd and 95% interval over seeds on the test split, best first."""

    sweep_id: str
    status: JobStatus | None = None
    metric: str
    split: str = "test"
    complete: bool
    rows: list[LeaderboardRow]
    baseline_rows: list[BaselineRow] = Field(default_factory=list)
    verdict: Literal["winner", "no_clear_winner", "incomplete"]
    winner: LeaderboardWinner | None = None
    comparison: Comparison | None = None
    method: str = ""
