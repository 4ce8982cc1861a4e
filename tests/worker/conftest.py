"""Both deployments the worker runs in: SQLite with the server-less SQLAlchemy broker
(embedded mode) and PostgreSQL with Redis (full mode), each with its own queue name
and data dir, migrated with Alembic like a real installation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from api.broker import close_celery_apps
from api.db.migrate import upgrade_to_head
from api.db.models import Base
from api.db.session import dispose_engines, session_scope
from api.settings import Settings
from tests.apl.synthetic import write_tiny_bert
from tests.services import unique_name

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`hf:<dir>` of a 2-layer, 32-wide BERT with the MiniLM tokenizer."""
    return f"hf:{write_tiny_bert(tmp_path_factory.mktemp('tiny-bert'))}"


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("worker-sqlite-template")
    upgrade_to_head(Settings(data_dir=data_dir))
    return data_dir / "aplserve.db"


@pytest.fixture(scope="session")
def worker_postgres_url(postgres_url: str) -> str:
    upgrade_to_head(Settings(database_url=postgres_url))
    return postgres_url


def truncate_all(settings: Settings) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with session_scope(settings) as session:
        session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def backend_settings(
    request: pytest.FixtureRequest, backend: str, data_dir: Path, sqlite_schema: Path, **fields: object
) -> Settings:
    queue = unique_name("aplserve_worker_q")
    if backend == "sqlite":
        shutil.copyfile(sqlite_schema, data_dir / "aplserve.db")
        return Settings(data_dir=data_dir, queue_name=queue, **fields)  # type: ignore[arg-type]
    return Settings(
        data_dir=data_dir,
        database_url=request.getfixturevalue("worker_postgres_url"),
        broker_url=request.getfixturevalue("redis_url"),
        queue_name=queue,
        **fields,  # type: ignore[arg-type]
    )


def release_backend(settings: Settings) -> None:
    close_celery_apps()
    if settings.database_url is not None:
        truncate_all(settings)
        client = redis.Redis.from_url(settings.resolved_broker_url)
        for key in client.scan_iter(f"{settings.queue_name}*"):
            client.delete(key)
        client.close()
    dispose_engines()


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, data_dir: Path, sqlite_schema: Path) -> Iterator[Settings]:
    """Per-test settings on each backend (no worker process)."""
    current = backend_settings(request, request.param, data_dir, sqlite_schema)
    try:
        yield current
    finally:
        release_backend(current)
