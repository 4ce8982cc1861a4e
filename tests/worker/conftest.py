"""Both deployments the worker runs in: SQLite with the server-less SQLAlchemy broker
(embedded mode) and PostgreSQL with Redis (full mode), each with its own queue name
and data dir, migrated with Alembic like a real installation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db.migrate import upgrade_to_head
from core.settings import Settings
from tests.apl.synthetic import write_tiny_bert
from tests.worker.harness import BACKENDS, backend_settings, release_backend


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


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, data_dir: Path, sqlite_schema: Path) -> Iterator[Settings]:
    """Per-test settings on each backend (no worker process)."""
    current = backend_settings(request, request.param, data_dir, sqlite_schema)
    try:
        yield current
    finally:
        release_backend(current)
