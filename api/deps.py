"""Typed request dependencies: `SettingsDep`, `DatabaseDep` (and its `SessionDep`), `OwnerDep`.

Settings come from the app's `AppState` (made by `create_app`), so a test can build
an app for its own database and broker without touching the environment.

A route reaches the database one way: through the request's `Database` (`DatabaseDep`),
never by opening a session itself (tests/api/test_route_boundaries.py checks). A sync
route takes the request's session (`SessionDep`, which the Database makes); an async
route runs one service function with a fresh session in a single thread hop
(`Database.run`); a use case that needs short sessions between long work of another kind
(an upload's ingest) gets `Database.session` as its session factory.

`SessionDep` never holds a database connection while the request waits for anything
else: the session is made without I/O (async, no thread hop), its connection is
checked out by the route's first query in the route's thread, and the route class
(api.routing.SessionRoute) closes it in that same thread as soon as the route
returns, before FastAPI waits for a thread again to serialize the response. So the
connections in use never exceed the threads running routes (`api_threads`), which
the pool covers (`db_pool_size` + `db_max_overflow`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.auth import Principal, authenticate, default_principal, hash_key
from api.quotas import request_kind
from api.services.idempotency import IDEMPOTENCY_KEY_MAX
from api.services.pagination import ID_PREFIX_PATTERN
from api.state import app_state
from core.db.session import session_factory
from core.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread, a hop per request."""
    return app_state(request.app).settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


T = TypeVar("T")


class Database:
    """The request's way to the database: the one place routes get a session from."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def session(self, *, read_only: bool = False) -> Session:
        """A new session; the caller closes it. `read_only`: autocommit, for work that only reads."""
        return session_factory(self._settings, read_only=read_only)()

    async def run(
        self,
        work: Callable[[Session], T],
        *,
        limiter: CapacityLimiter | None = None,
        read_only: bool = False,
    ) -> T:
        """Run `work` with a fresh session in a single worker-thread hop; for async routes.

        One hop instead of a sync route's two (the route, then the response's validation),
        and the connection is back in the pool before the hop ends. `limiter` (default: the
        routes' `api_threads`) is for work that waits on something other than the database.
        `read_only` work runs without a transaction: two round trips fewer (BEGIN, ROLLBACK).
        """

        def run() -> T:
            with self.session(read_only=read_only) as session:
                return work(session)

        return await anyio.to_thread.run_sync(run, limiter=limiter)


async def get_database(settings: SettingsDep) -> Database:
    return Database(settings)


DatabaseDep = Annotated[Database, Depends(get_database)]


async def get_session(database: DatabaseDep) -> AsyncIterator[Session]:
    """A session per request; services commit what they change, anything else is rolled back.

    Closing here is a no-op for sync routes (SessionRoute closed it in the route's thread).
    """
    session = database.session()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


# Declared for the OpenAPI page (the "Authorize" button); the check itself is `authenticate`,
# which answers problem+json instead of FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="An API key from `aplserve keys create --name NAME`.")


def _authenticate(settings: Settings, authorization: str | None) -> Principal:
    with Database(settings).session() as session:
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
    """Async with a cache in front: a known key costs no database round trip and no thread hop.

    Every authenticated request is also counted against the owner's request rate here
    (api/quotas.py), so each route, present or future, is limited the same way.
    """
    authorization = request.headers.get("authorization") if settings.auth_enabled else None
    cache_key = hash_key(authorization or "")
    state = app_state(request.app)
    principal = await state.principals.get_or_load(
        cache_key, lambda: run_in_threadpool(_authenticate, settings, authorization)
    )
    kind = request_kind(request.method, request.scope["path"])  # request.url would parse the whole URL
    if kind is not None:
        await state.rate_limits.check(kind, principal.owner_id)
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


#: The header of every create route (POST /v1/jobs, /v1/sweeps): see api.services.idempotency.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        description="Retrying with the same key returns what the first request created.",
    ),
]
