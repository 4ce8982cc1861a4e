"""Access to the real services the suite runs against (PostgreSQL, Redis).

Each test session gets its own PostgreSQL database and Redis key space so that a
developer's run and CI's run on one machine never see each other's rows or
messages. Under CI=true a missing service fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "APLSERVE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("APLSERVE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("APLSERVE_TEST_REDIS_PORT", "6379"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip locally, fail under CI, when a service does not answer."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)", pytrace=False)
    pytest.skip(message)


#: Every name handed out this session, so that the session can remove its Redis keys at the end.
ISSUED_NAMES: list[str] = []


def unique_name(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    ISSUED_NAMES.append(name)
    return name


def remove_redis_keys(names: list[str]) -> int:
    """Delete the keys kombu left in Redis for these queue names (queues, bindings); returns how many.

    Celery declares a binding set per queue name, and unique names per test would
    otherwise pile up in the developer's Redis run after run.
    """
    if not names or not reachable(REDIS_HOST, REDIS_PORT):
        return 0
    import redis

    removed = 0
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0) as client:
        for name in names:
            keys = list(client.scan_iter(match=f"*{name}*", count=1000))
            if keys:
                removed += int(client.delete(*keys))
    return removed
