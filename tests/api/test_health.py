"""Probes, Prometheus metrics, OpenAPI and CORS."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import assert_problem


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_readyz_is_503_when_the_broker_port_is_closed(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"broker_url": f"redis://127.0.0.1:{_closed_port()}/0", "readiness_timeout_seconds": 1.0}
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    body = assert_problem(response, 503, "not_ready")
    assert body["database"] == "ok"
    assert body["broker"] in ("unavailable", "timeout")


def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing"}
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    body = assert_problem(response, 503, "not_ready")
    assert body["database"] in ("unavailable", "timeout")
    assert body["broker"] == "ok"


def test_metrics_count_requests_by_route_template_and_jobs_by_status(
    client: TestClient, alice: dict[str, str], text_dataset: dict[str, object]
) -> None:
    client.get(f"/v1/datasets/{text_dataset['id']}", headers=alice)
    client.get("/v1/datasets/does-not-exist", headers=alice)
    created = client.post(
        "/v1/jobs", json={"dataset_id": text_dataset["id"], "base_model": "minilm-l6"}, headers=alice
    )
    assert created.status_code == 202
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert (
        'aplserve_http_requests_total{method="GET",route="/v1/datasets/{dataset_id}",status="200"} 1.0'
        in lines
    )
    assert (
        'aplserve_http_requests_total{method="GET",route="/v1/datasets/{dataset_id}",status="404"} 1.0'
        in lines
    )
    assert 'aplserve_http_requests_total{method="POST",route="/v1/datasets",status="201"} 1.0' in lines
    assert 'aplserve_jobs{status="queued"} 1.0' in lines
    assert 'aplserve_jobs{status="running"} 0.0' in lines
    assert any(line.startswith("aplserve_http_request_duration_seconds_bucket") for line in lines)
    uploaded = [line for line in lines if line.startswith("aplserve_upload_bytes_total ")]
    assert uploaded and float(uploaded[0].split()[1]) == text_dataset["size_bytes"]


def test_openapi_documents_every_model_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    documented = (
        "Dataset",
        "DatasetList",
        "Job",
        "JobList",
        "JobSpec",
        "MetricPoint",
        "MetricSeries",
        "BaseModelEntry",
        "BaseModelList",
        "Problem",
        "Readiness",
    )
    for name in documented:
        assert name in components, name
        assert components[name].get("examples"), f"{name} has no example"
    paths = schema["paths"]
    for path in (
        "/v1/datasets",
        "/v1/jobs",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/events",
        "/readyz",
    ):
        assert path in paths, path
    upload = paths["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"]
    bearer = schema["components"]["securitySchemes"]["HTTPBearer"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    assert paths["/v1/jobs"]["post"]["security"] == [{"HTTPBearer": []}]
    assert client.get("/docs").status_code == 200


def test_cors_allows_configured_origins(settings: Settings) -> None:
    configured = settings.model_copy(update={"cors_origins": ["https://dashboard.example"]})
    with TestClient(create_app(configured)) as client:
        allowed = client.options(
            "/v1/jobs",
            headers={"Origin": "https://dashboard.example", "Access-Control-Request-Method": "POST"},
        )
        denied = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://dashboard.example"
    assert "access-control-allow-origin" not in denied.headers


def test_a_database_outage_answers_problem_json_without_internals(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing"}
    )
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        response = client.get("/v1/datasets", headers={"Authorization": "Bearer aplsk_0_x"})
    assert_problem(response, 503, "database_unavailable")
    assert "127.0.0.1" not in response.text and "psycopg" not in response.text.lower()


def test_a_deadline_reads_as_timeout_even_when_a_library_re_raises_it() -> None:
    from kombu.exceptions import OperationalError
    from redis.exceptions import TimeoutError as RedisTimeout

    from api.routes.health import _timed_out

    try:
        try:
            raise RedisTimeout("Timeout reading from socket")
        except RedisTimeout as error:
            raise OperationalError(str(error)) from error
    except OperationalError as wrapped:
        assert _timed_out(wrapped)
    assert _timed_out(TimeoutError())
    assert not _timed_out(ConnectionRefusedError(111, "Connection refused"))
    assert not _timed_out(OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused."))
