"""owners.webhook_secret: the per-owner key that signs webhook calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

Nullable: existing owners get their secret on first use (GET /v1/webhooks/secret or
their first webhook), so the upgrade writes no rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("owners") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("owners") as batch:
        batch.drop_column("webhook_secret")
