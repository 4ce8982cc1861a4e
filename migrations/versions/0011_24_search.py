"""Search inside a sweep: sweep phases and results, trial rows, and each child's role.

Revision ID: i24a
Revises: i23a
Create Date: 2026-12-07

- jobs.role (nullable): "trial" or "replicate" for a sweep's children; the children of
  sweeps made before the revision are their replicates, so they are set to "replicate".
- sweeps.phase, sweeps.search_result (nullable) and sweeps.advances (0): the search's
  phase, its chosen configurations, and the counter whose UPDATE serialises advances.
- sweep_trials: one row per search trial (candidate, number, params, its job).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i24a"
down_revision: str | Sequence[str] | None = "i23a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("role", sa.String(length=16), nullable=True))
    op.execute("UPDATE jobs SET role = 'replicate' WHERE sweep_id IS NOT NULL")
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("phase", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("search_result", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("advances", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "sweep_trials",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sweep_id", sa.String(length=36), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("system_attrs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_sweep_trials_sweep_id_sweeps", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_sweep_trials_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sweep_trials"),
        sa.UniqueConstraint(
            "sweep_id", "candidate", "number", name="uq_sweep_trials_sweep_id_candidate_number"
        ),
        sa.UniqueConstraint("job_id", name="uq_sweep_trials_job_id"),
    )
    op.create_index("ix_sweep_trials_sweep_id", "sweep_trials", ["sweep_id"])


def downgrade() -> None:
    op.drop_index("ix_sweep_trials_sweep_id", table_name="sweep_trials")
    op.drop_table("sweep_trials")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("advances")
        batch.drop_column("search_result")
        batch.drop_column("phase")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("role")
