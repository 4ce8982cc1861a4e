"""The one session factory: an engine per database URL, sessions for requests and the worker.

SQLite (the embedded mode) is shared by the API process and the worker process, so
every connection turns on foreign keys, WAL (readers do not block the writer) and
a busy timeout (a writer waits for the other process instead of failing at once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000

_lock = threading.Lock()
_factories: dict[str, sessionmaker[Session]] = {}


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
    return create_engine(parsed, pool_pre_ping=True, **pool)


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    """The process-wide sessionmaker for the configured database (created once per URL)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    factory = _factories.get(url)
    if factory is None:
        with _lock:
            factory = _factories.get(url)
            if factory is None:
                factory = sessionmaker(bind=make_engine(url, settings), expire_on_commit=False)
                _factories[url] = factory
    return factory


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
        for factory in _factories.values():
            bind = factory.kw["bind"]
            if isinstance(bind, Engine):
                bind.dispose()
        _factories.clear()
