"""The OpenAPI document, with every error response typed as problem+json.

FastAPI puts a response `model` under the route's own media type (application/json);
errors here are application/problem+json, so after generation each 4xx/5xx response
gets the Problem schema (and its examples) under that media type alone. FastAPI's own
422 (`HTTPValidationError`, for routes that did not document theirs) is not what the
service answers either: it becomes the Problem with the `validation_error` example.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.schemas import problem_responses

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"


def _problem_content(response: dict[str, Any]) -> None:
    content = response.setdefault("content", {})
    problem = content.get(PROBLEM_JSON, {})
    json_body = content.pop("application/json", {})
    schema = json_body.get("schema") or problem.get("schema") or {"$ref": PROBLEM_REF}
    if schema.get("$ref") == FASTAPI_VALIDATION_REF:
        schema = {"$ref": PROBLEM_REF}
        problem = problem_responses("validation_error")[422]["content"][PROBLEM_JSON]
        response["description"] = "Unprocessable Entity: `validation_error` (see docs/errors.md)."
    content[PROBLEM_JSON] = {**problem, "schema": schema}


#: Problems any request can meet, whatever its route: the HTTP edge (api/edge.py) and the
#: database pool answer them before or around the route's own code.
ANY_REQUEST = ("invalid_characters", "request_timeout", "database_busy", "database_unavailable", "internal")
#: Problems of requests that change something: the per-owner write rate, the JSON body
#: limit and a full disk.
WRITES = ("rate_limited", "body_too_large", "storage_full")
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})


def _merge(operation: dict[str, Any], extra: dict[int | str, dict[str, Any]]) -> None:
    """Add service-wide problems to a route's documented ones (examples merged per status)."""
    responses = operation.setdefault("responses", {})
    for status, response in extra.items():
        current = responses.get(str(status))
        if current is None:
            responses[str(status)] = {
                "description": response["description"],
                "content": {
                    PROBLEM_JSON: {**response["content"][PROBLEM_JSON], "schema": {"$ref": PROBLEM_REF}}
                },
            }
            continue
        problem = current.setdefault("content", {}).setdefault(PROBLEM_JSON, {})
        examples = problem.setdefault("examples", {})
        for code, example in response["content"][PROBLEM_JSON].get("examples", {}).items():
            examples.setdefault(code, example)


def _add_service_wide(template: str, method: str, operation: dict[str, Any]) -> None:
    _merge(operation, problem_responses(*ANY_REQUEST))
    if template.endswith("/predict"):
        _merge(operation, problem_responses("rate_limited"))  # the predict rate; its own body limits
    elif template == "/v1/datasets" and method == "post":
        _merge(operation, problem_responses("rate_limited", "storage_full"))  # upload_too_large
    elif method in WRITE_METHODS:
        _merge(operation, problem_responses(*WRITES))


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = FastAPI.openapi(app)
    for template, path in document.get("paths", {}).items():
        for method, operation in path.items():
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5"):
                    _problem_content(response)
            _add_service_wide(template, method, operation)
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def install_problem_openapi(app: FastAPI) -> None:
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
