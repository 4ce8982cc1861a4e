"""Response bodies of the REST API, with examples for the OpenAPI page at /docs.

Request bodies reuse `apl.spec.JobSpec` so the API and the worker validate a job
with the same schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.jobs.document import JOB_EXAMPLE, Job

_EXAMPLE_TIME = "2026-01-15T09:30:00.123456Z"
_EXAMPLE_DATASET_ID = "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55"
_EXAMPLE_JOB_ID = "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class Problem(BaseModel):
    """An error (RFC 9457 problem+json) with a machine-readable `code`."""

    model_config = _examples(
        {
            "type": "https://aplserve.dev/problems/not-found",
            "title": "Not Found",
            "status": 404,
            "detail": "dataset was not found",
            "code": "not_found",
        }
    )

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For 422: each problem with its location, e.g. ['body', 'loss', 'clip']."
    )


class Health(BaseModel):
    model_config = _examples({"status": "ok"})

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Each dependency's state: 'ok', or a short reason it is unavailable."""

    model_config = _examples({"database": "ok", "broker": "ok"}, {"database": "ok", "broker": "unavailable"})

    database: str
    broker: str


_DATASET_EXAMPLE: dict[str, Any] = {
    "id": _EXAMPLE_DATASET_ID,
    "name": "movie-genres",
    "modality": "text",
    "format": "csv",
    "num_samples": 1200,
    "labels": ["action", "comedy", "drama"],
    "label_counts": {"action": 410, "comedy": 380, "drama": 655},
    "label_cardinality": 1.2,
    "size_bytes": 183422,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "created_at": _EXAMPLE_TIME,
    "warnings": ["label 'western' has only 2 samples"],
}


class Dataset(BaseModel):
    model_config = _examples(_DATASET_EXAMPLE)

    id: str
    name: str
    modality: Literal["text", "image"]
    format: Literal["csv", "jsonl", "zip"]
    num_samples: int
    labels: list[str] = Field(description="Sorted label names.")
    label_counts: dict[str, int] = Field(description="Number of samples carrying each label.")
    label_cardinality: float = Field(description="Mean number of labels per sample.")
    size_bytes: int = Field(description="Size of the uploaded file.")
    sha256: str = Field(description="SHA-256 of the uploaded file.")
    created_at: datetime
    warnings: list[str]


class DatasetList(BaseModel):
    model_config = _examples(
        {"items": [_DATASET_EXAMPLE], "next_cursor": "eyJ0IjoiMjAyNi0wMS0xNVQwOTozMDowMCJ9"}
    )

    items: list[Dataset]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class JobList(BaseModel):
    model_config = _examples({"items": [JOB_EXAMPLE], "next_cursor": None})

    items: list[Job]
    next_cursor: str | None


_METRIC_EXAMPLE: dict[str, Any] = {
    "epoch": 1,
    "step": 40,
    "train_loss": 0.212,
    "val_loss": 0.198,
    "map": 0.71,
    "micro_f1": 0.66,
    "macro_f1": 0.58,
    "per_class_ap": {"action": 0.8, "comedy": 0.62, "drama": 0.71},
    "time_s": 12.4,
}


class MetricPoint(BaseModel):
    model_config = _examples(_METRIC_EXAMPLE)

    epoch: int
    step: int
    train_loss: float | None
    val_loss: float | None
    map: float | None
    micro_f1: float | None
    macro_f1: float | None
    per_class_ap: dict[str, float | None]
    time_s: float


class MetricSeries(BaseModel):
    model_config = _examples({"job_id": _EXAMPLE_JOB_ID, "series": [_METRIC_EXAMPLE]})

    job_id: str
    series: list[MetricPoint] = Field(description="One point per evaluation, ordered by epoch.")


_BASE_MODEL_EXAMPLE: dict[str, Any] = {
    "name": "minilm-l6",
    "modality": "text",
    "family": "transformers",
    "pretrained": True,
    "description": "all-MiniLM-L6-v2 sentence encoder",
}


class BaseModelEntry(BaseModel):
    model_config = _examples(_BASE_MODEL_EXAMPLE)

    name: str
    modality: Literal["text", "image"]
    family: Literal["transformers", "timm"]
    pretrained: bool
    description: str


class BaseModelList(BaseModel):
    model_config = _examples({"items": [_BASE_MODEL_EXAMPLE]})

    items: list[BaseModelEntry]


#: `responses=` for routes: the problem+json shapes, so /docs shows them.
def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}, "description": "Error"}
        for status in statuses
    }
