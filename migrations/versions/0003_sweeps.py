"""Sweeps (loss tournaments): the sweeps table, and jobs.sweep_id / jobs.test_dataset_id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-03

Both new job columns are nullable: existing jobs belong to no sweep and have no
separate test dataset, so the upgrade writes no rows. On SQLite the job columns and
their foreign keys are added in batch mode (a copy of the jobs table).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("leaderboard", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name="fk_sweeps_owner_id_owners", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sweeps"),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_sweeps_owner_id_idempotency_key"),
    )
    op.create_index("ix_sweeps_owner_created", "sweeps", ["owner_id", "created_at", "id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("test_dataset_id", sa.String(length=36), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_foreign_key(
            "fk_jobs_test_dataset_id_datasets", "datasets", ["test_dataset_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"])
        batch.create_index("ix_jobs_test_dataset_id", ["test_dataset_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_test_dataset_id")
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_constraint("fk_jobs_test_dataset_id_datasets", type_="foreignkey")
        batch.drop_constraint("fk_jobs_sweep_id_sweeps", type_="foreignkey")
        batch.drop_column("test_dataset_id")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_owner_created", table_name="sweeps")
    op.drop_table("sweeps")
