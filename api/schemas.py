"""Response bodies of the REST API, with examples for the OpenAPI page at /docs.

Request bodies reuse `apl.spec.JobSpec` so the API and the worker validate a job
with the same schema.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.serving.schemas import NAME_MAX, printable_name
from apl.spec import JobSpec
from core.error_codes import ERROR_CODES
from core.errors import problem_type
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
            "type": problem_type("not_found"),
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
    #: The object storage (s3://); always "ok" with file:// storage.
    storage: str = "ok"


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
    "profile": {"label_cardinality": 1.2, "imbalance_ratio": 1.7237, "unknown_share": 0.0},
}


class DatasetProfile(BaseModel):
    """What a sweep without `candidates` chooses its losses from (README, "Loss tournament")."""

    label_cardinality: float = Field(description="Mean number of labels per sample.")
    imbalance_ratio: float = Field(
        description="Samples of the most frequent label over those of the least (a label with none counts 1)."
    )
    unknown_share: float = Field(description="Unknown cells over all label cells (samples x labels).")


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
    upload_options: dict[str, str] = Field(
        default_factory=dict,
        description="The reading options the upload gave (text_column, labels_column, filename_column, "
        "label_separator); empty when the file used the default layout.",
    )
    unknown_cells: int = Field(
        default=0,
        description="Label cells marked unknown (the `unknown` column or key): neither present nor absent, "
        "they add nothing to the loss, the metrics or threshold tuning.",
    )
    unknown_counts: dict[str, int] = Field(
        default_factory=dict,
        description="Unknown cells per label (every label listed); empty when no cell is unknown.",
    )
    profile: DatasetProfile | None = Field(
        default=None,
        description="Label cardinality, imbalance ratio and unknown share: what a sweep that leaves "
        "`candidates` out chooses its losses from.",
    )

    @field_validator("upload_options", "unknown_counts", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("unknown_cells", mode="before")
    @classmethod
    def _none_is_zero(cls, value: Any) -> Any:
        return 0 if value is None else value


class DatasetList(BaseModel):
    model_config = _examples(
        {"items": [_DATASET_EXAMPLE], "next_cursor": "eyJ0IjoiMjAyNi0wMS0xNVQwOTozMDowMCJ9"}
    )

    items: list[Dataset]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


#: Bounds of a job's `name` and `metadata` (the metadata bounds are OpenAI's); a model's name too.
JOB_NAME_MAX = NAME_MAX
METADATA_MAX_KEYS = 16
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512


class JobRequest(JobSpec):
    """What POST /v1/jobs takes: a JobSpec plus the submitter's own `name` and `metadata`."""

    model_config = _examples(
        {
            "dataset_id": _EXAMPLE_DATASET_ID,
            "base_model": "minilm-l6",
            "loss": {"name": "apl"},
            "hyperparameters": {"epochs": 3, "seed": 0},
            "name": "movies-apl-baseline",
            "metadata": {"experiment": "apl-vs-bce"},
        }
    )

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=JOB_NAME_MAX,
        description="A label for the job, shown in lists, the dashboard and the CLI.",
    )
    metadata: dict[str, str] | None = Field(
        default=None,
        description=f"Up to {METADATA_MAX_KEYS} string pairs (keys up to {METADATA_KEY_MAX} characters, "
        f"values up to {METADATA_VALUE_MAX}) kept with the job for your own bookkeeping.",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str | None) -> str | None:
        return printable_name(value)

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} keys")
        for key, item in value.items():
            if not 0 < len(key) <= METADATA_KEY_MAX:
                raise ValueError(f"keys must be 1 to {METADATA_KEY_MAX} characters")
            if len(item) > METADATA_VALUE_MAX:
                raise ValueError(f"the value of {key[:40]!r} is longer than {METADATA_VALUE_MAX} characters")
        return value

    def spec(self) -> JobSpec:
        """The training spec alone (what the worker reads and idempotency compares)."""
        return JobSpec.model_validate(self.model_dump(exclude={"name", "metadata"}))


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


_EVENT_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "job_id": _EXAMPLE_JOB_ID,
    "created_at": _EXAMPLE_TIME,
    "type": "epoch",
    "level": "info",
    "message": "epoch 1/3: train loss 0.2120, val loss 0.1980, mAP 0.710, micro-F1 0.660, macro-F1 0.580, "
    "96.4 samples/s",
    "data": {"epoch": 1, "step": 40, "map": 0.71, "micro_f1": 0.66, "macro_f1": 0.58, "samples_per_s": 96.4},
}


class JobEvent(BaseModel):
    """One entry of a job's stored history."""

    model_config = _examples(_EVENT_EXAMPLE)

    id: int = Field(description="Increasing; pass as ?after= (or Last-Event-ID) to continue after it.")
    job_id: str
    created_at: datetime
    type: Literal["status", "epoch", "checkpoint", "message"] = Field(
        description="status: a state change or cancel request; epoch: an evaluated epoch; "
        "checkpoint: an epoch checkpoint was saved; message: anything else worth knowing."
    )
    level: Literal["info", "warning", "error"]
    message: str
    data: dict[str, Any] = Field(
        description="The facts in machine form: status, epoch metrics, error code..."
    )


class JobProgressEvent(BaseModel):
    """The data of a `progress` event on the live stream: only what moves while a job runs.

    The stream sends the whole Job on each `status` event (the first event of every
    connection is one); a progress event carries the changed fields, which a follower
    merges into the Job it holds, instead of the spec and everything else again.
    """

    id: str
    status: str
    progress: dict[str, int]
    best_metrics: dict[str, Any] | None


class JobEventList(BaseModel):
    model_config = _examples({"job_id": _EXAMPLE_JOB_ID, "items": [_EVENT_EXAMPLE], "next_after": None})

    job_id: str
    items: list[JobEvent] = Field(description="Oldest first.")
    next_after: int | None = Field(description="Pass as ?after= for the next page; null on the last page.")


_CHECKPOINT_EXAMPLE: dict[str, Any] = {
    "epoch": 2,
    "step": 80,
    "attempt": 1,
    "created_at": _EXAMPLE_TIME,
    "metrics": {"train_loss": 0.18, "val_loss": 0.17, "map": 0.76, "micro_f1": 0.7, "macro_f1": 0.63},
    "on_disk": True,
    "best": True,
}


class Checkpoint(BaseModel):
    """An epoch checkpoint the job saved, with the metrics of that epoch."""

    model_config = _examples(_CHECKPOINT_EXAMPLE)

    epoch: int
    step: int | None
    attempt: int | None = Field(description="Which run of the job saved it (a resumed job runs again).")
    created_at: datetime
    metrics: dict[str, float | None]
    on_disk: bool = Field(
        description="Whether this checkpoint is the file on disk now. Only the newest one is kept, while "
        "the job runs (to resume it); it is removed when the job ends."
    )
    best: bool = Field(description="The epoch whose weights the job's model keeps (best validation mAP).")


class CheckpointList(BaseModel):
    model_config = _examples({"job_id": _EXAMPLE_JOB_ID, "items": [_CHECKPOINT_EXAMPLE]})

    job_id: str
    items: list[Checkpoint] = Field(description="One per epoch, oldest first (a re-saved epoch shows once).")


_BASE_MODEL_EXAMPLE: dict[str, Any] = {
    "name": "minilm-l6",
    "modality": "text",
    "family": "transformers",
    "pretrained": True,
    "description": "all-MiniLM-L6-v2 sentence encoder",
    "defaults": {
        "learning_rate": 2e-4,
        "epochs": 2,
        "batch_size": 32,
        "image_size": None,
        "max_length": 128,
        "budget": {"min_steps": 150, "max_steps": 1500, "patience": 3},
        "head_init": "linear_probe",
    },
}


class StepBudgetDefaults(BaseModel):
    """How long a job that leaves `epochs` out trains (stopped by evidence)."""

    min_steps: int = Field(description="Optimizer steps before early stopping may end the run.")
    max_steps: int = Field(description="The most optimizer steps (rounded up to whole epochs).")
    patience: int = Field(description="Evaluations without a higher validation mAP that end the run.")


class BaseModelDefaults(BaseModel):
    """What a job or sweep for this base model trains with where its spec leaves the field out."""

    learning_rate: float
    epochs: int = Field(
        description="The epochs these defaults were first chosen with; a job that leaves `epochs` out "
        "trains with `budget` instead."
    )
    batch_size: int
    image_size: int | None = Field(description="Image models; null for text models.")
    max_length: int | None = Field(description="Text models (tokens); null for image models.")
    budget: StepBudgetDefaults | None = None
    head_init: Literal["linear_probe", "random"] = Field(
        default="linear_probe",
        description="Where fine-tuning starts: the job's linear probe as the head (LP-FT), or a random head.",
    )


class BaseModelEntry(BaseModel):
    model_config = _examples(_BASE_MODEL_EXAMPLE)

    name: str
    modality: Literal["text", "image"]
    family: Literal["transformers", "timm"]
    pretrained: bool
    description: str
    defaults: BaseModelDefaults = Field(
        description="Hyperparameters a job or sweep takes when its spec leaves them out; anything the "
        "spec sets wins. `timm:` and `hf:` references take their family's defaults "
        "(`family_defaults` of the list)."
    )
    space: dict[str, Any] = Field(
        default_factory=dict,
        description="The space a search sweep explores when its `search.space` is left out.",
    )


class BaseModelList(BaseModel):
    model_config = _examples(
        {
            "items": [_BASE_MODEL_EXAMPLE],
            "family_defaults": {
                "text": _BASE_MODEL_EXAMPLE["defaults"],
                "image": {
                    "learning_rate": 1e-3,
                    "epochs": 15,
                    "batch_size": 8,
                    "image_size": 128,
                    "max_length": None,
                },
            },
        }
    )

    items: list[BaseModelEntry]
    family_defaults: dict[Literal["text", "image"], BaseModelDefaults] = Field(
        description="The defaults of `hf:` (text) and `timm:` (image) references, per modality."
    )


#: What a paginated list can answer besides 401: a bad cursor, a bad limit or filter.
LIST_PROBLEMS = ("invalid_cursor", "validation_error")


def _problem_example(status: int, code: str) -> dict[str, Any]:
    entry = ERROR_CODES[code]
    return {
        "summary": code,
        "description": entry.advice,
        "value": {
            "type": problem_type(code),
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": entry.advice,
            "code": code,
        },
    }


def problem_responses(*problems: int | str | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each error status with the Problem schema and an example per code.

    Name the codes the route can answer with: `"dataset_in_use"` (its status comes from
    `core.error_codes`), or `(413, "image_too_large")` for a code registered with several
    statuses. A bare status (`404`) documents the status without naming its codes.
    Unknown codes fail at import, so a route cannot document a code the registry lacks.
    """
    by_status: dict[int, list[str]] = {}
    for problem in problems:
        if isinstance(problem, int):
            by_status.setdefault(problem, [])
            continue
        status, code = problem if isinstance(problem, tuple) else (None, problem)
        entry = ERROR_CODES[code]  # KeyError: register the code in core/error_codes.py
        if status is None:
            if len(entry.statuses) != 1:
                raise ValueError(f"{code} has statuses {entry.statuses}; pass (status, {code!r})")
            status = entry.statuses[0]
        elif status not in entry.statuses:
            raise ValueError(f"{code} is registered with {entry.statuses}, not {status}")
        by_status.setdefault(status, []).append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, codes in sorted(by_status.items()):
        listed = ", ".join(f"`{code}`" for code in codes)
        content: dict[str, Any] = {}
        if codes:
            content["examples"] = {code: _problem_example(status, code) for code in codes}
        responses[status] = {
            "model": Problem,
            "content": {"application/problem+json": content},
            "description": f"{HTTPStatus(status).phrase}: {listed or 'a problem'} (see docs/errors.md).",
        }
    return responses


class WorkerEntry(BaseModel):
    """One live worker and the devices it offers one job."""

    id: str = Field(description="The worker's node name (aplserve-<pid>@<host>).")
    hostname: str
    device_kind: str = Field(description="`cuda` or `cpu`.")
    devices: int = Field(description="How many devices one job may train on at once (one process each).")
    busy: bool = Field(description="Whether it runs a job now.")
    started_at: datetime
    seen_at: datetime


class WorkerList(BaseModel):
    model_config = _examples(
        {
            "items": [
                {
                    "id": "aplserve-812@gpu-host",
                    "hostname": "gpu-host",
                    "device_kind": "cuda",
                    "devices": 4,
                    "busy": False,
                    "started_at": "2026-12-07T17:00:00Z",
                    "seen_at": "2026-12-07T17:05:00Z",
                }
            ],
            "max_devices": 4,
        }
    )

    items: list[WorkerEntry]
    max_devices: int = Field(
        description="The most `hyperparameters.devices` a job may ask for now (0: no worker)."
    )
