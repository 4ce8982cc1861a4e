"""Each owner's webhook secret: created on first use, replaced by a rotation."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.models import Owner
from core.webhooks.signing import new_secret


def get_or_create_secret(session: Session, owner_id: str) -> str:
    """The owner's secret; commits when it had none.

    The conditional UPDATE makes two first uses at once (an API request and a
    worker's webhook) agree on one secret: the loser reads the winner's value.
    """
    current = session.scalar(select(Owner.webhook_secret).where(Owner.id == owner_id))
    if current:
        return current
    session.execute(
        update(Owner)
        .where(Owner.id == owner_id, Owner.webhook_secret.is_(None))
        .values(webhook_secret=new_secret())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    stored = session.scalar(select(Owner.webhook_secret).where(Owner.id == owner_id))
    if not stored:
        raise LookupError(f"owner {owner_id} does not exist")
    return stored


def rotate_secret(session: Session, owner_id: str) -> str:
    """Replace the owner's secret; calls already under way keep the old one. Commits."""
    secret = new_secret()
    session.execute(
        update(Owner)
        .where(Owner.id == owner_id)
        .values(webhook_secret=secret)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return secret
