"""Idempotency-Key handling shared by every create route (jobs, sweeps).

A retried POST with the key of an earlier one returns what the first made, so a
client that lost the answer (timeout, 503 from a hung broker) can retry safely. The
same key for a different request is a client bug and says so (409) rather than
silently returning something the client did not ask for.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Mapped, Session

from core.errors import AppError

#: Longest key accepted; the column is sized for it.
IDEMPOTENCY_KEY_MAX = 200


class _Keyed(Protocol):
    owner_id: Mapped[str]
    idempotency_key: Mapped[str | None]


RowT = TypeVar("RowT", bound=_Keyed)


def check_key(idempotency_key: str | None) -> None:
    """422 for a key outside 1..IDEMPOTENCY_KEY_MAX characters (the header's own bounds, restated
    for callers that are not HTTP routes)."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        message = f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters"
        raise AppError(
            422,
            "invalid_idempotency_key",
            message,
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": message}],
        )


def earlier(session: Session, entity: type[RowT], owner_id: str, idempotency_key: str | None) -> RowT | None:
    """The row this owner already made with this key, if any."""
    if idempotency_key is None:
        return None
    statement = select(entity).where(
        entity.owner_id == owner_id,  # type: ignore[arg-type]
        entity.idempotency_key == idempotency_key,  # type: ignore[arg-type]
    )
    return session.scalar(statement)


def replay(existing: RowT, same_request: bool, what: str) -> RowT:
    """The earlier row when the retried request is the same one; 409 when the key is reused."""
    if not same_request:
        raise AppError(
            409,
            "idempotency_key_reused",
            f"this Idempotency-Key was already used for a different {what}; use a new key",
        )
    return existing
