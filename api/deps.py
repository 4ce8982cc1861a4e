"""Typed request dependencies: `SettingsDep`, `SessionDep`, `OwnerDep`.

Settings come from the app's `AppState` (made by `create_app`), so a test can build
an app for its own database and broker without touching the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.auth import Principal, authenticate, default_principal, hash_key
from api.services.pagination import ID_PREFIX_PATTERN
from api.state import app_state
from core.db.session import session_factory
from core.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread, a hop per request."""
    return app_state(request.app).settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A session per request; services commit what they change, anything else is rolled back."""
    with session_factory(settings)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

# Declared for the OpenAPI page (the "Authorize" button); the check itself is `authenticate`,
# which answers problem+json instead of FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="An API key from `aplserve keys create --name NAME`.")


def _authenticate(settings: Settings, authorization: str | None) -> Principal:
    with session_factory(settings)() as session:
        if not settings.auth_enabled:
            return default_principal(session, settings.default_owner)
        principal = authenticate(session, authorization)
        try:
            session.commit()  # last_used_at
        except OperationalError:  # e.g. SQLite busy with a worker's write: the request still counts
            session.rollback()
        return principal


async def get_principal(
    request: Request,
    settings: SettingsDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Async with a cache in front: a known key costs no database round trip and no thread hop."""
    authorization = request.headers.get("authorization") if settings.auth_enabled else None
    cache_key = hash_key(authorization or "")
    cache = app_state(request.app).principals
    principal = cache.get(cache_key)
    if principal is None:
        principal = await run_in_threadpool(_authenticate, settings, authorization)
        cache.put(cache_key, principal)
    return principal


OwnerDep = Annotated[Principal, Depends(get_principal)]

#: `?id_prefix=`: only rows whose id starts with it (how the CLI turns a short id into a whole one).
IdPrefixQuery = Annotated[
    str | None,
    Query(
        pattern=ID_PREFIX_PATTERN,
        description="Only items whose id starts with this (lower-case hex and dashes), e.g. the first 8 "
        "characters the dashboard shows.",
    ),
]
