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
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import ApiKey, Owner, utcnow
from core.errors import AppError

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


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    owner_name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def list_api_keys(session: Session, owner_name: str | None = None) -> list[KeyInfo]:
    """Every key (of one owner when named), oldest first; the secrets are not stored, so not shown."""
    query = select(ApiKey, Owner.name).join(Owner, Owner.id == ApiKey.owner_id)
    if owner_name is not None:
        query = query.where(Owner.name == owner_name)
    rows = session.execute(query.order_by(ApiKey.created_at, ApiKey.key_id)).all()
    return [KeyInfo(key.key_id, name, key.created_at, key.last_used_at, key.revoked_at) for key, name in rows]


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Mark the key revoked; False when no active key has this id. The caller commits."""
    key_id = _split(key_id) or key_id  # a whole key is accepted too
    key = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None)))
    if key is None:
        return False
    key.revoked_at = utcnow()
    return True


def _unauthorized(detail: str, *, invalid: bool) -> AppError:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return AppError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


#: `last_used_at` is written at most this often per key: it tells a stale key from a used one
#: without turning every authenticated request into a database write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def authenticate(session: Session, authorization: str | None) -> Principal:
    """The owner of the bearer key in an `Authorization` header value; 401 otherwise.

    Also records when the key was last used (to the minute; the caller commits).
    """
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
    api_key, owner = row
    now = utcnow()
    last = api_key.last_used_at
    if last is None or now - last >= LAST_USED_RESOLUTION:
        api_key.last_used_at = now
    return Principal(owner_id=owner.id, owner_name=owner.name)


def default_principal(session: Session, owner_name: str) -> Principal:
    """The single owner used when authentication is disabled (local experiments)."""
    owner = get_or_create_owner(session, owner_name)
    session.commit()
    return Principal(owner_id=owner.id, owner_name=owner.name)
