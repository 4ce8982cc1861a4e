"""Partial labels: how many label cells a dataset leaves unknown, in all and per label.

Revision ID: 0007
Revises: 0006
Create Date: 2026-01-07

- datasets.unknown_cells (nullable) and datasets.unknown_counts (nullable JSON): what the
  upload's `unknown` column (or JSONL key) marked unannotated. Datasets from before the
  revision hold NULL, which the API reads as 0 and {} (they had no unknown cells).

Both columns are nullable, so the upgrade writes no rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("unknown_cells", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("unknown_counts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("unknown_counts")
        batch.drop_column("unknown_cells")
