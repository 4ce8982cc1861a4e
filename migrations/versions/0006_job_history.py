"""Job history and the newcomer's conveniences: job_events, jobs.name/metadata, upload options.

Revision ID: 0006
Revises: 0005
Create Date: 2026-01-06

- job_events: the stored history of each job (status changes, evaluated epochs, saved
  checkpoints, problems), read by GET /v1/jobs/{id}/events and .../checkpoints.
- jobs.name, jobs.metadata: the submitter's own label and string map (nullable).
- datasets.upload_options (nullable) and an (owner_id, sha256) index: how an upload was
  read, and finding re-uploads of identical bytes.

Every new column is nullable and the table starts empty, so the upgrade writes no rows;
jobs from before it simply have no stored history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_events_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id", "id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("upload_options", sa.JSON(), nullable=True))
    op.create_index("ix_datasets_owner_sha256", "datasets", ["owner_id", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_datasets_owner_sha256", table_name="datasets")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("upload_options")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metadata")
        batch.drop_column("name")
    op.drop_index("ix_job_events_job_id", table_name="job_events")
    op.drop_table("job_events")
