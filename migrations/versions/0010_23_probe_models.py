"""A job may publish two models: its fine-tuned model and the linear probe that beat it.

Revision ID: i23a
Revises: i27a
Create Date: 2026-12-07

- models.job_id loses its unique constraint (uq_models_job_id) and gets a plain index
  (ix_models_job_id): a job whose linear-probe baseline beats its fine-tuned model on
  validation publishes both, and points jobs.model_id at the probe (issue 23).

No row changes. The downgrade restores the constraint, which fails while a job has two models.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "i23a"
down_revision: str | Sequence[str] | None = "i27a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint("uq_models_job_id", type_="unique")
        batch.create_index("ix_models_job_id", ["job_id"])


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_index("ix_models_job_id")
        batch.create_unique_constraint("uq_models_job_id", ["job_id"])
