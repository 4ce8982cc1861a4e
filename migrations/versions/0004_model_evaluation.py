"""models.decision and models.evaluation: the decision policy and the stored evaluation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-01-05

Both nullable: models published before this revision have neither (their evaluation
endpoint answers 404 `evaluation_unavailable`, and they predict with min_labels 0), so
the upgrade writes no rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("decision", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("evaluation", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("evaluation")
        batch.drop_column("decision")
