"""The HTTP edge in the app, on both backends: control characters, body limits, sessions under load.

(The protocol-level limits, oversized and slow headers, need a real server:
tests/reliability/test_http_edge.py.)
"""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.main import create_app
from api.routing import releases_sessions
from core.settings import Settings
from tests.api.conftest import Uploader, assert_problem, csv_bytes


@pytest.mark.parametrize(
    "path",
    ["/static/app.js%00.txt", "/v1/jobs/%00", "/v1/datasets/ab%00cd", "/v1/models/%00", "/v1/jobs/a%0Ab"],
)
def test_control_characters_in_a_path_are_404(client: TestClient, alice: dict[str, str], path: str) -> None:
    assert_problem(client.get(path, headers=alice), 404, "not_found")


def test_control_characters_in_a_query_are_422(client: TestClient, alice: dict[str, str]) -> None:
    body = assert_problem(client.get("/v1/jobs?cursor=%00", headers=alice), 422, "invalid_characters")
    assert body["errors"][0]["loc"] == ["query"]


@pytest.mark.parametrize("value", ["\u0000", "ab\u0000cd", "\ud800"])
def test_nul_and_lone_surrogates_in_json_strings_are_never_500(
    client: TestClient, alice: dict[str, str], value: str
) -> None:
    # json.dumps escapes both (\\u0000, \\ud800): valid JSON that decodes to an unstorable string.
    body = json.dumps({"dataset_id": value, "base_model": "minilm-l6"})
    response = client.post("/v1/jobs", content=body, headers=alice | {"Content-Type": "application/json"})
    assert response.status_code in (404, 422), response.text
    assert_problem(response, response.status_code, response.json()["code"])


def test_a_nul_in_a_form_field_is_never_500(upload: Uploader, alice: dict[str, str]) -> None:
    response = upload(alice, name="bad\x00name")
    assert response.status_code in (201, 422), response.text  # SQLite stores a NUL; PostgreSQL cannot


def test_json_bodies_over_the_limit_are_413_before_authentication(client: TestClient) -> None:
    big = {"dataset_id": "x" * (1024 * 1024 + 10), "base_model": "minilm-l6"}
    body = assert_problem(client.post("/v1/jobs", json=big), 413, "body_too_large")  # no key at all
    assert "1048576" in body["detail"]

    def chunks() -> Any:
        for _ in range(40):
            yield b" " * 65536

    streamed = client.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(streamed, 413, "body_too_large")


def test_uploads_stream_past_the_json_limit(upload: Uploader, alice: dict[str, str]) -> None:
    rows = [(f"a sample text number {i} about the weather", ["a" if i % 2 else "b"]) for i in range(40_000)]
    content = csv_bytes(rows)
    assert len(content) > 1024 * 1024
    assert upload(alice, content).status_code == 201


def test_every_sync_route_gives_its_connection_back_before_serialization(settings: Settings) -> None:
    app = create_app(settings)
    for route in app.routes:
        if isinstance(route, APIRoute) and not inspect.iscoroutinefunction(route.endpoint):
            assert releases_sessions(route.endpoint), f"{route.path} is not made with api.routing.APIRouter"


def test_more_concurrent_requests_than_connections_do_not_exhaust_the_pool(
    settings: Settings, alice: dict[str, str], upload: Uploader
) -> None:
    """One connection, four threads, 24 requests at once: each request holds the connection only
    while its route runs, so none waits for it past the pool timeout."""
    assert upload(alice).status_code == 201
    tight = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_seconds": 5.0, "api_threads": 4}
    )
    from core.db.session import dispose_engines

    dispose_engines()  # the engine is made again with the tight pool
    statuses: list[int] = []
    with TestClient(create_app(tight)) as client:

        def read() -> None:
            for path in ("/v1/datasets", "/v1/base-models", "/v1/jobs", "/v1/models"):
                statuses.append(client.get(path, headers=alice).status_code)

        threads = [threading.Thread(target=read) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    dispose_engines()
    assert statuses == [200] * 96
