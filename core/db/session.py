"""The one session factory: an engine per database URL, sessions for requests and the worker.

SQLite (the embedded mode) is shared by the API process and the worker process, so
every connection turns on foreign keys, WAL (readers do not block the writer) and
a busy timeout (a writer waits for the other process instead of failing at once).

Two costs per request are avoided on the hot read routes, each a round trip to the
database: routes that only read take a `read_only` session, which runs in autocommit
(no BEGIN, and no ROLLBACK when it closes), and a PostgreSQL connection is pinged only
when it sat idle in the pool for `db_ping_idle_seconds` (SQLAlchemy's `pool_pre_ping`
pings on every checkout). A connection that breaks while in use still fails its one
request with 503 `database_unavailable`, and SQLAlchemy then replaces the whole pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[tuple[str, bool], sessionmaker[Session]] = {}
_IDLE_SINCE = "aplserve_idle_since"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """A new engine for `url` with the settings both processes rely on.

    The pool (`db_pool_size` + `db_max_overflow`) is sized to cover every API thread
    (`api_threads`) plus the few background threads, so no thread waits for a
    connection; a connection is only held while a thread runs a query (api/routing.py).
    """
    settings = settings or get_settings()
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
    }
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(parsed, **pool)
    _ping_when_idle(engine, settings.db_ping_idle_seconds)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's custom pessimistic disconnect handling, for connections idle a while.

    `DisconnectionError` makes the pool drop the connection and check out another
    (SQLAlchemy retries three times), so a request after a database restart succeeds.
    """

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or back in the pool a moment ago
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()  # the SELECT began a transaction
        except Exception as error:  # psycopg's OperationalError and its kin: the server is gone
            raise DisconnectionError(str(error)) from error


def session_factory(settings: Settings | None = None, *, read_only: bool = False) -> sessionmaker[Session]:
    """The process-wide sessionmaker for the configured database (created once per URL).

    `read_only`: sessions in autocommit on the same pool, each statement seeing the latest
    commit, for work that only reads; a flush in one raises instead of writing unguarded.
    """
    settings = settings or get_settings()
    key = (settings.resolved_database_url, read_only)
    factory = _factories.get(key)
    if factory is None:
        with _lock:
            factory = _factories.get(key)
            if factory is None:
                factory = _new_factory(settings, read_only)
                _factories[key] = factory
    return factory


def _new_factory(settings: Settings, read_only: bool) -> sessionmaker[Session]:
    url = settings.resolved_database_url
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = make_engine(url, settings)
    if not read_only:
        return sessionmaker(bind=engine, expire_on_commit=False)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    factory = sessionmaker(bind=autocommit, expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_flush)
    return factory


def _refuse_flush(_session: Session, _context: Any, _instances: Any) -> None:
    raise RuntimeError("a read-only session does not write; use session_factory(settings) for changes")


def get_engine(settings: Settings | None = None) -> Engine:
    bind = session_factory(settings).kw["bind"]
    assert isinstance(bind, Engine)
    return bind


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back when it raises.

    The worker uses this around each state change (claim, progress, metric point,
    finish) so that each is visible to the API as soon as the block exits.
    """
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection (tests, and before a process forks)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
