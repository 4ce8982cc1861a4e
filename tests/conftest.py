"""Session-wide fixtures for the real services: a fresh PostgreSQL database and a
private Redis database/prefix per test session, and a temporary data dir per test."""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.s3server import AWS_ENV, WeedServer, start_weed
from tests.services import (
    ISSUED_NAMES,
    POSTGRES_ADMIN_URL,
    REDIS_HOST,
    REDIS_PORT,
    remove_redis_keys,
    require_service,
    unique_name,
)

#: After the last test, how long the process may take to exit before it is ended as failed.
EXIT_DEADLINE_S = 120.0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave Redis as the session found it: drop the queues and bindings of this session's names."""
    remove_redis_keys(ISSUED_NAMES)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Past the per-test timeout's reach, the interpreter still joins every non-daemon thread
    (a thread pool's workers among them) at exit: a stuck one would hold the run forever.
    If the process is still there EXIT_DEADLINE_S from now, dump every thread and exit 1."""
    faulthandler.dump_traceback_later(EXIT_DEADLINE_S, exit=True, file=sys.__stderr__)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database created for this test session and dropped after it."""
    admin = make_url(POSTGRES_ADMIN_URL)
    require_service("PostgreSQL", admin.host or "127.0.0.1", admin.port or 5432)
    name = unique_name("aplserve_test")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis URL; callers isolate themselves with unique queue names / key prefixes."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A real S3 server (SeaweedFS `weed mini`) for the session; each test takes its own prefix."""
    server = start_weed(tmp_path_factory.mktemp("weed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: WeedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """APLSERVE_STORAGE_URL etc. for a fresh prefix of the session's S3 server; the AWS_* credentials
    are set in this process too (boto3 reads them from the environment)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return s3_server.storage_env()
