"""The suite's own service fixtures really reach the services."""

from __future__ import annotations

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def test_postgres_fixture_gives_a_private_database(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        name = conn.execute(text("select current_database()")).scalar_one()
    engine.dispose()
    assert name == make_url(postgres_url).database
    assert name.startswith("aplserve_test_")


def test_redis_fixture_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping() is True


def test_a_sessions_redis_keys_are_removed_by_name(redis_url: str) -> None:
    from tests.services import remove_redis_keys, unique_name

    mine, other = unique_name("aplserve_cleanup_q"), unique_name("aplserve_cleanup_q")
    client = redis.Redis.from_url(redis_url)
    for name in (mine, other):
        client.sadd(f"_kombu.binding.{name}", "x")
        client.rpush(name, "message")
    assert remove_redis_keys([mine]) == 2
    assert not client.exists(f"_kombu.binding.{mine}", mine)
    assert client.exists(f"_kombu.binding.{other}", other) == 2
    remove_redis_keys([other])
