"""Bodies of the model registry and predict routes, with examples for /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apl.decisions import FALLBACK_THRESHOLD

_EXAMPLE_MODEL_ID = "5d2c7e1a-9b3f-4c8d-8e6a-1f2b3c4d5e6f"
_EXAMPLE_JOB_ID = "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f"
_EXAMPLE_DATASET_ID = "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55"
_EXAMPLE_SHA = "2d33b2d38f74f1ec2eab2d6dced26f337fa1e5bfc9cae4044fd4d36ca96534c4"

#: The threshold a label keeps when its validation split had too few positives to tune one.
GLOBAL_THRESHOLD = FALLBACK_THRESHOLD

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ModelArtifact(BaseModel):
    sha256: str = Field(description="SHA-256 of the downloadable archive (hex).")
    size_bytes: int
    url: str = Field(description="Where to download it; add ?format=onnx for the ONNX export.")
    formats: list[Literal["tar", "onnx"]] = ["tar", "onnx"]


_MODEL_EXAMPLE: dict[str, Any] = {
    "id": _EXAMPLE_MODEL_ID,
    "job_id": _EXAMPLE_JOB_ID,
    "dataset_id": _EXAMPLE_DATASET_ID,
    "base_model": "minilm-l6",
    "modality": "text",
    "labels": ["action", "comedy", "drama"],
    "thresholds": {"action": 0.41, "comedy": 0.37, "drama": 0.5},
    "threshold_fallback_labels": ["drama"],
    "global_threshold": GLOBAL_THRESHOLD,
    "metrics": {
        "map": 0.71,
        "micro_f1": 0.66,
        "macro_f1": 0.58,
        "best_epoch": 2,
        "fallback_labels": ["drama"],
    },
    "artifact": {
        "sha256": _EXAMPLE_SHA,
        "size_bytes": 90_931_200,
        "url": f"/v1/models/{_EXAMPLE_MODEL_ID}/artifact",
        "formats": ["tar", "onnx"],
    },
    "created_at": "2026-01-15T09:41:12.000000Z",
}


class Model(BaseModel):
    model_config = _examples(_MODEL_EXAMPLE)

    id: str
    job_id: str = Field(description="The training job that made this model.")
    dataset_id: str | None = Field(description="The dataset it was trained on (null once deleted).")
    base_model: str = Field(description="The base model the job fine-tuned, as given in its spec.")
    modality: Literal["text", "image"]
    labels: list[str] = Field(description="Label names, in the order of the model's outputs.")
    thresholds: dict[str, float] = Field(
        description="Per-label decision thresholds tuned for F1 on the validation split."
    )
    threshold_fallback_labels: list[str] = Field(
        description="Labels with too few validation positives to tune: they use `global_threshold`."
    )
    global_threshold: float = GLOBAL_THRESHOLD
    metrics: dict[str, Any] = Field(description="Validation metrics of the best epoch.")
    artifact: ModelArtifact
    created_at: datetime


class ModelList(BaseModel):
    model_config = _examples({"items": [_MODEL_EXAMPLE], "next_cursor": None})

    items: list[Model]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_base64: str = Field(
        description="The image file (PNG, JPEG, WebP, GIF, BMP), base64-encoded; a `data:` URL is accepted."
    )


class PredictRequest(BaseModel):
    """Inputs for one model: texts for a text model, `{"image_base64"}` objects for an image model."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"inputs": ["a heist goes wrong in a small town", "two friends on a road trip"]},
                {"inputs": ["space battle"], "threshold": {"action": 0.3}, "top_k": 2},
                {"inputs": [{"image_base64": "iVBORw0KGgoAAAANSUhEUgAA..."}], "threshold": 0.4},
            ]
        },
    )

    inputs: list[str | ImageInput] = Field(description="Predictions come back in this order.")
    threshold: Probability | dict[str, Probability] | None = Field(
        default=None,
        description="One threshold for every label, or {label: threshold} overriding some labels "
        "(the others keep the model's tuned thresholds). Default: the model's thresholds.",
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most the k highest-scoring labels among those at or above their threshold. "
        "`scores` always holds every label.",
    )


class Prediction(BaseModel):
    labels: list[str] = Field(description="Labels at or above their threshold, highest score first.")
    scores: dict[str, float] = Field(description="The probability of every label, in the model's order.")


_PREDICT_EXAMPLE: dict[str, Any] = {
    "model_id": _EXAMPLE_MODEL_ID,
    "predictions": [
        {"labels": ["drama", "action"], "scores": {"action": 0.62, "comedy": 0.08, "drama": 0.91}},
        {"labels": ["comedy"], "scores": {"action": 0.11, "comedy": 0.77, "drama": 0.2}},
    ],
    "thresholds": {"action": 0.41, "comedy": 0.37, "drama": 0.5},
}


class PredictResponse(BaseModel):
    model_config = _examples(_PREDICT_EXAMPLE)

    model_id: str
    predictions: list[Prediction] = Field(description="One per input, in input order.")
    thresholds: dict[str, float] = Field(description="The thresholds this request applied, per label.")
