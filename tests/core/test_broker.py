"""The send deadline: a hung server is given up on quickly, a busy local SQLite file is waited for."""

from __future__ import annotations

from pathlib import Path

from core.broker import SQLITE_BUSY_TIMEOUT_S, send_deadline, transport_options
from core.settings import Settings


def test_a_redis_send_gives_up_after_the_configured_timeout(tmp_path: Path) -> None:
    redis_url = "redis://127.0.0.1:6379/0"
    settings = Settings(data_dir=tmp_path, broker_url=redis_url, broker_send_timeout_seconds=2)
    assert send_deadline(settings) == 2
    assert transport_options(settings)["socket_timeout"] == 2


def test_the_embedded_sqlite_broker_waits_as_long_as_sqlite_waits_for_its_lock(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_send_timeout_seconds=2)
    assert "sqlite" in settings.resolved_broker_url
    assert send_deadline(settings) == SQLITE_BUSY_TIMEOUT_S
    assert transport_options(settings) == {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    longer = Settings(data_dir=tmp_path, broker_send_timeout_seconds=45)
    assert send_deadline(longer) == 45
