"""The suite's own service fixtures really reach the services."""

from __future__ import annotations

import redis
from sqlalchemy import create_engine, text


def test_postgres_fixture_gives_an_empty_private_database(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        name = conn.execute(text("select current_database()")).scalar_one()
        tables = conn.execute(
            text("select count(*) from information_schema.tables where table_schema = 'public'")
        ).scalar_one()
    engine.dispose()
    assert name.startswith("aplserve_test_")
    assert tables == 0


def test_redis_fixture_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping() is True
