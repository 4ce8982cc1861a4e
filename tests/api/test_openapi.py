"""The OpenAPI document: every error is typed problem+json with its codes and examples, and the
upload body says what the files look like. (Whether routes answer only with the codes they list
is checked on every response of the API tests: see `check_documented` in conftest.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.main import create_app
from api.schemas import problem_responses
from core.error_codes import ERROR_CODES
from core.settings import Settings


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec: dict[str, Any] = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi"))).openapi()
    return spec


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_every_error_response_is_a_problem_with_registered_codes(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            where = f"{method.upper()} {path} {status}"
            assert set(response["content"]) == {"application/problem+json"}, where
            body = response["content"]["application/problem+json"]
            assert body["schema"] == {"$ref": "#/components/schemas/Problem"}, where
            assert body["examples"], f"{where} names no codes"
            for code, example in body["examples"].items():
                assert int(status) in ERROR_CODES[code].statuses, where
                assert example["value"]["code"] == code and example["value"]["status"] == int(status)
            assert response["description"] != "Error"
    assert "HTTPValidationError" not in json.dumps(document)


def test_routes_list_the_codes_they_answer_with(document: dict[str, Any]) -> None:
    def codes(path: str, method: str, status: int) -> set[str]:
        body = document["paths"][path][method]["responses"][str(status)]["content"][
            "application/problem+json"
        ]
        return set(body["examples"])

    assert codes("/v1/jobs", "post", 422) >= {"unknown_base_model", "modality_mismatch", "validation_error"}
    assert codes("/v1/jobs", "post", 503) == {"broker_unavailable", "database_busy", "database_unavailable"}
    assert codes("/v1/jobs", "post", 429) == {"quota_exceeded", "rate_limited"}
    assert codes("/v1/jobs/{job_id}", "get", 422) >= {"invalid_characters"}
    assert codes("/v1/datasets", "post", 422) >= {"suspicious_label_separator", "invalid_csv", "missing_file"}
    assert codes("/v1/datasets/{dataset_id}", "delete", 409) == {"dataset_in_use"}
    assert codes("/v1/models/{model_id}/predict", "post", 413) == {"request_too_large", "image_too_large"}
    assert codes("/v1/jobs/{job_id}", "get", 401) == {"unauthorized"}


def test_the_upload_body_describes_formats_and_options(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/datasets"]["post"]["requestBody"]
    assert "labels.csv" in body["description"] and "`|`" in body["description"]
    assert "suspicious_label_separator" in body["description"]
    fields = body["content"]["multipart/form-data"]["schema"]["properties"]
    assert set(fields) == {
        "file",
        "name",
        "text_column",
        "labels_column",
        "filename_column",
        "label_separator",
        "delimiter",
    }
    assert document["paths"]["/v1/datasets"]["post"]["parameters"][0]["name"] == "dedupe"


def test_the_events_route_documents_both_views(document: dict[str, Any]) -> None:
    events = document["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert set(events["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {p["name"] for p in events["parameters"]} >= {"after", "limit", "Last-Event-ID"}
    assert "/v1/jobs/{job_id}/checkpoints" in document["paths"]


def test_problem_responses_refuses_unregistered_codes_and_wrong_statuses() -> None:
    with pytest.raises(KeyError):
        problem_responses("no_such_code")
    with pytest.raises(ValueError, match="image_too_large"):
        problem_responses("image_too_large")  # registered with two statuses: say which
    with pytest.raises(ValueError, match="not 404"):
        problem_responses((404, "dataset_in_use"))
