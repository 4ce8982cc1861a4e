"""Initial schema: owners, API keys, datasets, jobs, metric points, models.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written by hand from the models in core/db/models.py (then at api/db/models.py); `alembic check` in the tests
proves the two agree on SQLite and PostgreSQL. jobs.model_id and models.job_id
refer to each other, so the jobs -> models foreign key is added once both tables
exist (in SQLite batch mode that copies the still empty jobs table).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(length=36), nullable=False)


def _owner_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["owner_id"], ["owners.id"], name=f"fk_{table}_owner_id_owners", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "owners",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_owners"),
        sa.UniqueConstraint("name", name="uq_owners_name"),
    )

    op.create_table(
        "api_keys",
        _id(),
        _id("owner_id"),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        _timestamp("last_used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        _owner_fk("api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_id", name="uq_api_keys_key_id"),
    )
    op.create_index("ix_api_keys_owner_id", "api_keys", ["owner_id"])

    op.create_table(
        "datasets",
        _id(),
        _id("owner_id"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("label_counts", sa.JSON(), nullable=False),
        sa.Column("label_cardinality", sa.Float(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        _owner_fk("datasets"),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
    )
    op.create_index("ix_datasets_owner_created", "datasets", ["owner_id", "created_at", "id"])

    op.create_table(
        "jobs",
        _id(),
        _id("owner_id"),
        sa.Column("dataset_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("best_metrics", sa.JSON(), nullable=True),
        sa.Column("model_id", sa.String(length=36), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        _timestamp("heartbeat_at", nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _owner_fk("jobs"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_jobs_dataset_id_datasets", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_id_idempotency_key"),
    )
    op.create_index("ix_jobs_dataset_id", "jobs", ["dataset_id"])
    op.create_index("ix_jobs_owner_created", "jobs", ["owner_id", "created_at", "id"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at", "id"])

    op.create_table(
        "metric_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _id("job_id"),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("map", sa.Float(), nullable=True),
        sa.Column("micro_f1", sa.Float(), nullable=True),
        sa.Column("macro_f1", sa.Float(), nullable=True),
        sa.Column("per_class_ap", sa.JSON(), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_metric_points_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_metric_points"),
    )
    op.create_index("ix_metric_points_job_epoch", "metric_points", ["job_id", "epoch", "step"])

    op.create_table(
        "models",
        _id(),
        _id("owner_id"),
        _id("job_id"),
        sa.Column("base_model", sa.String(length=500), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        _owner_fk("models"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_models_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("job_id", name="uq_models_job_id"),
    )
    op.create_index("ix_models_owner_created", "models", ["owner_id", "created_at", "id"])

    with op.batch_alter_table("jobs") as batch:
        batch.create_foreign_key(
            "fk_jobs_model_id_models", "models", ["model_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_model_id_models", type_="foreignkey")
    op.drop_index("ix_models_owner_created", table_name="models")
    op.drop_table("models")
    op.drop_index("ix_metric_points_job_epoch", table_name="metric_points")
    op.drop_table("metric_points")
    op.drop_index("ix_jobs_status_created", table_name="jobs")
    op.drop_index("ix_jobs_owner_created", table_name="jobs")
    op.drop_index("ix_jobs_dataset_id", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_datasets_owner_created", table_name="datasets")
    op.drop_table("datasets")
    op.drop_index("ix_api_keys_owner_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("owners")
