"""Fixtures of the fault tests: a tiny BERT to train, a migrated PostgreSQL database, a private Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.broker import close_celery_apps
from core.db.migrate import upgrade_to_head
from core.db.session import dispose_engines
from core.settings import Settings
from tests.apl.synthetic import write_tiny_bert
from tests.reliability.faults import PrivateRedis, private_redis
from tests.worker.harness import truncate_all


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`hf:<dir>` of a 2-layer, 32-wide BERT with the MiniLM tokenizer (outside any test's data dir)."""
    return f"hf:{write_tiny_bert(tmp_path_factory.mktemp('tiny-bert'))}"


@pytest.fixture(scope="session")
def reliability_postgres_url(postgres_url: str) -> str:
    upgrade_to_head(Settings(database_url=postgres_url))
    return postgres_url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def full_mode(tmp_path: Path, reliability_postgres_url: str, broker: PrivateRedis) -> Iterator[Settings]:
    """PostgreSQL (the session's database, emptied after the test) with the test's own Redis as broker."""
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=reliability_postgres_url,
        broker_url=broker.url,
        queue_name="aplserve_reliability",
        job_lease_seconds=8,
        job_resend_after_seconds=3,
        broker_send_timeout_seconds=1,
        webhook_allow_private_addresses=True,
    )
    settings.data_dir.mkdir()
    try:
        yield settings
    finally:
        close_celery_apps()
        truncate_all(settings)
        dispose_engines()
