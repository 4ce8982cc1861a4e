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


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = FastAPI.openapi(app)
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5"):
                    _problem_content(response)
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def install_problem_openapi(app: FastAPI) -> None:
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
