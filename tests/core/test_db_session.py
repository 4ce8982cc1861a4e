"""The session factory's round-trip savings: read-only sessions in autocommit, and a
PostgreSQL connection pinged only after it sat idle in the pool."""

from __future__ import annotations

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.db.models import Owner
from core.db.session import make_engine, session_factory
from core.settings import Settings
from tests.services import POSTGRES_ADMIN_URL


def _dbapi(session: Session) -> object:
    return session.connection().connection.dbapi_connection


def test_a_read_only_session_reads_without_a_transaction_and_refuses_to_write(settings: Settings) -> None:
    with session_factory(settings, read_only=True)() as session:
        assert session.scalar(select(func.count()).select_from(Owner)) == 0
        connection = _dbapi(session)
        if settings.database_url is not None:  # PostgreSQL: no BEGIN was sent, so no ROLLBACK is due
            assert connection.autocommit  # type: ignore[attr-defined]
            assert connection.info.transaction_status == TransactionStatus.IDLE  # type: ignore[attr-defined]
        session.add(Owner(name="nobody"))
        with pytest.raises(RuntimeError, match="read-only session"):
            session.flush()
    with session_factory(settings)() as session:  # the same pool, transactional again
        assert session.scalar(select(func.count()).select_from(Owner)) == 0  # nothing was written
        if settings.database_url is not None:
            connection = _dbapi(session)
            assert not connection.autocommit  # type: ignore[attr-defined]
            assert connection.info.transaction_status == TransactionStatus.INTRANS  # type: ignore[attr-defined]


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


def _engine(url: str, ping_idle_seconds: float) -> Engine:
    settings = Settings(
        database_url=url, db_pool_size=1, db_max_overflow=0, db_ping_idle_seconds=ping_idle_seconds
    )
    return make_engine(url, settings)


def test_an_idle_connection_whose_server_went_away_is_replaced_before_use(worker_postgres_url: str) -> None:
    engine = _engine(worker_postgres_url, ping_idle_seconds=0.0)
    try:
        first = _backend_pid(engine)
        _terminate(first)  # as a database restart would, while the connection sat in the pool
        assert _backend_pid(engine) != first  # the ping found it gone: a new connection, no error
    finally:
        engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged_and_a_break_costs_one_request(
    worker_postgres_url: str,
) -> None:
    engine = _engine(worker_postgres_url, ping_idle_seconds=3600.0)
    try:
        first = _backend_pid(engine)
        _terminate(first)
        with pytest.raises(OperationalError):  # not pinged: this request meets the broken connection
            _backend_pid(engine)
        assert _backend_pid(engine) != first  # SQLAlchemy replaced the pool: the next one is served
    finally:
        engine.dispose()
