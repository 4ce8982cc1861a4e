"""API keys: creation, hashing at rest and request authentication.

A key reads `aplsk_<key_id>_<secret>`: `key_id` (public, unique) finds the row,
then the SHA-256 of the whole key is compared in constant time. The secret is 32
random bytes, so a fast hash is right here; a slow password hash would only cost
latency on every request without adding safety.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db.models import ApiKey, Owner
from api.errors import AppError

KEY_PREFIX = "aplsk_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for; rows are filtered by `owner_id` everywhere."""

    owner_id: str
    owner_name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _split(key: str) -> str | None:
    """The key_id of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key.removeprefix(KEY_PREFIX).partition("_")
    if not sep or not key_id or not secret or len(key_id) > 32:
        return None
    return key_id


def get_or_create_owner(session: Session, name: str) -> Owner:
    """The owner called `name`, created when new.

    Call it before any other write of the unit of work: losing the race against
    another process rolls the session back and reads the winner's row.
    """
    owner = session.scalar(select(Owner).where(Owner.name == name))
    if owner is not None:
        return owner
    owner = Owner(name=name)
    session.add(owner)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        owner = session.scalars(select(Owner).where(Owner.name == name)).one()
    return owner


def create_api_key(session: Session, owner_name: str) -> tuple[Owner, str]:
    """Create a key for the named owner (creating the owner when new); returns the plain key.

    The plain key is shown once; only its hash is stored. The caller commits.
    """
    owner = get_or_create_owner(session, owner_name)
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(owner_id=owner.id, key_id=key_id, key_hash=hash_key(key)))
    session.flush()
    return owner, key


def _unauthorized(detail: str, *, invalid: bool) -> AppError:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return AppError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


def authenticate(session: Session, authorization: str | None) -> Principal:
    """The owner of the bearer key in an `Authorization` header value; 401 otherwise."""
    if not authorization:
        raise _unauthorized("this route needs an 'Authorization: Bearer <key>' header", invalid=False)
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("the Authorization header must read 'Bearer <key>'", invalid=False)
    key_id = _split(key)
    row = None
    if key_id is not None:
        row = session.execute(
            select(ApiKey, Owner)
            .join(Owner, Owner.id == ApiKey.owner_id)
            .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
        ).first()
    # Hash and compare even when nothing matched, so timing does not tell which part was wrong.
    stored = row[0].key_hash if row is not None else hash_key("")
    if not hmac.compare_digest(hash_key(key), stored) or row is None:
        raise _unauthorized("the API key is not valid", invalid=True)
    return Principal(owner_id=row[1].id, owner_name=row[1].name)


def default_principal(session: Session, owner_name: str) -> Principal:
    """The single owner used when authentication is disabled (local experiments)."""
    owner = get_or_create_owner(session, owner_name)
    session.commit()
    return Principal(owner_id=owner.id, owner_name=owner.name)
