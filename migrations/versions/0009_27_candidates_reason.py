"""Sweeps say why they compare the losses they compare when the client left `candidates` out.

Revision ID: i27a
Revises: i29a
Create Date: 2026-12-07

- sweeps.candidates_reason (nullable text): the dataset profile's reason for the chosen
  candidates (core.sweeps.candidates). Sweeps from before the revision, and sweeps whose
  client gave candidates, hold NULL.

The column is nullable, so the upgrade writes no rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i27a"
down_revision: str | Sequence[str] | None = "i29a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("candidates_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("candidates_reason")
