"""A model's own name, so that models can be told apart in lists (issue 28).

Revision ID: i28a
Revises: i24a
Create Date: 2026-12-07

- models.name (nullable): the name its owner gave the model (PATCH /v1/models/{id}).
  NULL until then: the API shows the job's name instead, so no row needs a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i28a"
down_revision: str | Sequence[str] | None = "i24a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("name")
