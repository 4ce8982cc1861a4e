"""Per-owner quotas and request rates, on both backends (rates in Redis in full mode, memory in embedded)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.quotas import storage_url
from core.settings import Settings
from tests.api.conftest import assert_problem, csv_bytes, make_key
from tests.reliability.faults import private_redis


@pytest.fixture
def limited(settings: Settings) -> Iterator[Any]:
    """An app for `settings` with some quota and rate fields changed, and alice's key."""

    def make(**fields: Any) -> tuple[TestClient, dict[str, str]]:
        app = create_app(settings.model_copy(update=fields))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client, {"Authorization": f"Bearer {make_key(settings, 'alice')}"}

    opened: list[TestClient] = []
    try:
        yield make
    finally:
        for client in opened:
            client.__exit__(None, None, None)


def _dataset(client: TestClient, headers: dict[str, str], content: bytes | None = None) -> Any:
    return client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.csv", content or csv_bytes(), "text/csv")}
    )


def test_active_jobs_are_capped_per_owner(limited: Any, settings: Settings) -> None:
    client, alice = limited(quota_active_jobs=2)
    dataset = _dataset(client, alice).json()["id"]
    spec = {"dataset_id": dataset, "base_model": "minilm-l6"}
    first, second = (client.post("/v1/jobs", json=spec, headers=alice) for _ in range(2))
    assert first.status_code == second.status_code == 202
    body = assert_problem(client.post("/v1/jobs", json=spec, headers=alice), 429, "quota_exceeded")
    assert body["limit"] == 2 and body["used"] == 2
    bob = {"Authorization": f"Bearer {make_key(settings, 'bob')}"}
    bobs = _dataset(client, bob).json()["id"]
    assert (
        client.post("/v1/jobs", json=spec | {"dataset_id": bobs}, headers=bob).status_code == 202
    )  # per owner
    # A job that ends frees its place.
    assert client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=alice).status_code == 202
    assert client.post("/v1/jobs", json=spec, headers=alice).status_code == 202


def test_dataset_storage_is_capped_per_owner(limited: Any) -> None:
    size = len(csv_bytes())
    client, alice = limited(quota_dataset_bytes=int(size * 1.5))
    assert _dataset(client, alice).status_code == 201
    body = assert_problem(_dataset(client, alice), 429, "quota_exceeded")
    assert body["limit"] == int(size * 1.5) and body["used"] == size
    assert client.get("/v1/datasets", headers=alice).json()["items"][0]["size_bytes"] == size  # one kept


def test_writes_are_rate_limited_with_retry_after(limited: Any, settings: Settings) -> None:
    client, alice = limited(rate_limit_writes="3/minute")
    for _ in range(3):
        assert client.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200
    refused = client.post("/v1/webhooks/secret/rotate", headers=alice)
    body = assert_problem(refused, 429, "rate_limited")
    assert body["limit"] == "3 per 1 minute"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert client.get("/v1/webhooks/secret", headers=alice).status_code == 200  # reads are not counted
    bob = {"Authorization": f"Bearer {make_key(settings, 'bob')}"}
    assert client.post("/v1/webhooks/secret/rotate", headers=bob).status_code == 200  # per owner


def test_predict_has_its_own_rate(limited: Any) -> None:
    client, alice = limited(rate_limit_predict="2/minute", rate_limit_writes="100/minute")
    calls = [
        client.post("/v1/models/missing/predict", json={"inputs": ["x"]}, headers=alice) for _ in range(3)
    ]
    assert [call.status_code for call in calls] == [404, 404, 429]
    assert "Retry-After" in calls[2].headers
    assert client.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200


def test_full_mode_counts_in_redis_shared_by_every_api_process(limited: Any, backend: str) -> None:
    if backend == "sqlite":
        first, alice = limited(rate_limit_writes="2/minute")
        assert storage_url(first.app.state.aplserve.settings) == "async+memory://"
        return
    first, alice = limited(rate_limit_writes="2/minute")
    second, _ = limited(rate_limit_writes="2/minute")
    assert storage_url(first.app.state.aplserve.settings).startswith("async+redis://")
    assert first.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200
    assert second.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200
    assert_problem(first.post("/v1/webhooks/secret/rotate", headers=alice), 429, "rate_limited")
    assert_problem(second.post("/v1/webhooks/secret/rotate", headers=alice), 429, "rate_limited")


def test_a_hung_rate_limit_store_lets_requests_through(limited: Any, tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis") as store:
        client, alice = limited(rate_limit_writes="1000/minute", rate_limit_storage_url=f"async+{store.url}")
        assert client.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200
        store.sigstop()
        started = time.monotonic()
        assert client.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200
        assert time.monotonic() - started < 2.0  # one bounded wait, then checks pause
        started = time.monotonic()
        assert client.post("/v1/webhooks/secret/rotate", headers=alice).status_code == 200
        assert time.monotonic() - started < 0.5
