"""SQLAlchemy 2 models: the database is the single source of truth for every state.

The API writes owners, keys, datasets and queued jobs; the worker claims jobs,
writes progress, metric points and models. Both import these classes, and the
Alembic revisions in `migrations/` are kept identical to them (a test runs
`alembic check` on SQLite and PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from core.jobs.status import JobStatus

# Deterministic constraint names, so that migrations can address them on every backend
# (SQLite batch mode needs names to drop or recreate a constraint).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite keeps no offset and hands back naive values; PostgreSQL hands back the
    session's zone. Normalising both here keeps cursors and comparisons identical
    on the two backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them without an offset so that all
        # values have the same shape and sort correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Owner(Base):
    """Who owns datasets, jobs and models; every API key belongs to one owner."""

    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Signs this owner's webhook calls (HMAC-SHA256). Kept in clear because signing needs
    # it; created on first use (core/webhooks/owner_secrets.py), replaced by a rotation.
    webhook_secret: Mapped[str | None] = mapped_column(String(64))


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the whole key.

    Keys are 32 random bytes, so a fast hash is enough (no password stretching);
    `key_id` is the public part of the key and is how a request finds its row.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    """An uploaded, validated dataset; its normalized files are in <data_dir>/datasets/<id>/."""

    __tablename__ = "datasets"
    __table_args__ = (
        Index("ix_datasets_owner_created", "owner_id", "created_at", "id"),
        # Re-uploads of identical bytes are found by their digest (a warning, or ?dedupe=true).
        Index("ix_datasets_owner_sha256", "owner_id", "sha256"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    num_samples: Mapped[int] = mapped_column(Integer)
    labels: Mapped[list[Any]]
    label_counts: Mapped[dict[str, Any]]
    label_cardinality: Mapped[float] = mapped_column(Float)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    warnings: Mapped[list[Any]]
    #: The reading options the upload gave (text_column, labels_column, ..., label_separator).
    upload_options: Mapped[dict[str, Any] | None]
    #: Label cells the upload marked unknown (partial annotation); NULL on datasets from before 0007.
    unknown_cells: Mapped[int | None] = mapped_column(Integer)
    #: Unknown cells per label name; NULL before 0007, {} when nothing is unknown.
    unknown_counts: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A training job. The worker claims it with a conditional UPDATE (queued -> running).

    `heartbeat_at` / `lease_expires_at` let a sweeper find a job whose worker died;
    `attempts` counts claims so a job that keeps killing workers ends `failed`.
    `sent_at` is the outbox mark: when the job's message was last handed to the broker,
    NULL while a queued job has no message (never sent, its send failed, or it was
    queued again); the reconciler (core.jobs.dispatch) sends those.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    # Kept (set to NULL) when the dataset of a finished job is deleted; the spec keeps its id.
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    spec: Mapped[dict[str, Any]]
    progress: Mapped[dict[str, Any]]
    best_metrics: Mapped[dict[str, Any] | None]
    # The models table refers back to jobs, so this reference is added after both exist.
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL", use_alter=True))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: The submitter's own label and string map (OpenAI-style `metadata`); never read by training.
    name: Mapped[str | None] = mapped_column(String(200))
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The sweep this job is a child of (a loss tournament); NULL for an ordinary job.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"), index=True)
    # The dataset the job is scored on at the end (spec.test_dataset_id), so that dataset is
    # not deleted while the job still needs it; NULL when it has none or it was deleted later.
    test_dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True
    )
    # A sweep child's part: "trial" (a search trial, scored on validation only) or "replicate".
    role: Mapped[str | None] = mapped_column(String(16))


class Sweep(Base):
    """A loss tournament: one child job per (candidate loss, seed), all on the same splits.

    Its status is not stored: it follows the children (core/sweeps/state.py), so it can
    never disagree with them. `leaderboard` caches the leaderboard once every child has
    ended (nothing it is computed from changes after that); NULL before.
    """

    __tablename__ = "sweeps"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_sweeps_owner_created", "owner_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    spec: Mapped[dict[str, Any]]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    leaderboard: Mapped[dict[str, Any] | None]
    #: Why the sweep compares these losses when the client left `candidates` out (the
    #: dataset's profile, core.sweeps.candidates); NULL when candidates were given.
    candidates_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # With a search: "search", then "replicate" once every trial has ended; NULL without one.
    # Only core.sweeps.search changes it, under the row lock its `advances` UPDATE takes.
    phase: Mapped[str | None] = mapped_column(String(16))
    # Per candidate index: the chosen configuration and its search value (set with "replicate").
    search_result: Mapped[dict[str, Any] | None]
    # Bumped by every search advance: the UPDATE that serialises advances of one sweep.
    advances: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SweepTrial(Base):
    """One search trial of a sweep: its candidate, its number in that candidate's study, its
    params, and the job that trains it. State and values are read from the job (its status,
    its metric points), so they can never disagree with it. `system_attrs` keeps what the
    Optuna pruner records of the trial (Hyperband's rungs), for the next decision."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "candidate", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    candidate: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    params: Mapped[dict[str, Any]]
    system_attrs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricPoint(Base):
    """One evaluation of a job's model on its validation split."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_job_epoch", "job_id", "epoch", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    map: Mapped[float | None] = mapped_column(Float)
    micro_f1: Mapped[float | None] = mapped_column(Float)
    macro_f1: Mapped[float | None] = mapped_column(Float)
    per_class_ap: Mapped[dict[str, Any]] = mapped_column(default=dict)
    time_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """One entry of a job's history: a status change, an evaluated epoch, a saved checkpoint, a problem.

    Append-only. Written next to the change it records (core.jobs.lifecycle), in the
    same transaction where there is one, so the history never claims what the job row
    does not show. The id orders a job's events and is the SSE stream's event id.
    """

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    #: "status", "epoch", "checkpoint" or "message".
    type: Mapped[str] = mapped_column(String(32))
    #: "info", "warning" or "error".
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A trained model; the artifact file lives at <data_dir>/<artifact_path>.

    `decision` (policy, target, min_labels, calibration method, temperatures, threshold
    sources) and `evaluation` (the Evaluation document of its validation split, made
    once when the worker published it) are NULL for models published before they existed.
    """

    __tablename__ = "models"
    __table_args__ = (Index("ix_models_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    # Not unique: a job whose linear probe beat its fine-tuned model publishes both (issue 23).
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    base_model: Mapped[str] = mapped_column(String(500))
    modality: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[Any]]
    thresholds: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    artifact_path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    decision: Mapped[dict[str, Any] | None]
    evaluation: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The owner's name for the model (PATCH /v1/models/{id}); NULL shows the job's name.
    name: Mapped[str | None] = mapped_column(String(200))


class WebhookDelivery(Base):
    """The durable outbox of a job's webhook call: one row per job that named a `webhook_url`.

    Written in the same transaction as the job's final state, so a call is never lost
    between the two. Each attempt is claimed with a conditional UPDATE on `attempts`
    (core.webhooks.outbox), so after a restart two processes never make the same
    attempt; `id` is the delivery id the receiver deduplicates on.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    #: pending (more attempts to make), delivered (a 2xx) or failed (refused, or out of attempts).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    #: While an attempt is being made: when its sender is presumed dead and the attempt free.
    lease_expires_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Worker(Base):
    """A live worker process and the devices it offers jobs (issue 29: jobs on several devices).

    Each worker writes its row when it starts and refreshes `seen_at` with every lease
    sweep; it deletes the row when it stops. A row not refreshed for a while
    (core.workers.LIVE_SECONDS) is a worker that died: it is not counted, and the next
    worker to start removes it.
    """

    __tablename__ = "workers"

    #: The Celery node name (aplserve-<pid>@<host>).
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: cuda or cpu, and how many a job may use at once (one training process each).
    device_kind: Mapped[str] = mapped_column(String(16))
    device_count: Mapped[int] = mapped_column(Integer)
    #: The job it runs now, if any.
    job_id: Mapped[str | None] = mapped_column(String(36))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
