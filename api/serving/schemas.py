"""Bodies of the model registry and predict routes, with examples for /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apl.decisions import FALLBACK_THRESHOLD

_EXAMPLE_MODEL_ID = "5d2c7e1a-9b3f-4c8d-8e6a-1f2b3c4d5e6f"
_EXAMPLE_JOB_ID = "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f"
_EXAMPLE_DATASET_ID = "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55"
_EXAMPLE_SHA = "2d33b2d38f74f1ec2eab2d6dced26f337fa1e5bfc9cae4044fd4d36ca96534c4"

#: The threshold a label keeps when its validation split had too few positives to tune one.
GLOBAL_THRESHOLD = FALLBACK_THRESHOLD

Probability = Annotated[float, Field(ge=0.0, le=1.0)]

#: The longest name a job or a model may be given.
NAME_MAX = 128


def printable_name(value: str | None) -> str | None:
    """A job's or model's name without its outer spaces; refused when empty or not printable
    (a control character would break the tables and lines it is shown in)."""
    if value is not None and (not value.strip() or not value.isprintable()):
        raise ValueError("must be printable text, not only spaces")
    return value.strip() if value is not None else None


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ModelArtifact(BaseModel):
    sha256: str = Field(description="SHA-256 of the downloadable archive (hex).")
    size_bytes: int
    url: str = Field(description="Where to download it; add ?format=onnx for the ONNX export.")
    formats: list[Literal["tar", "onnx"]] = ["tar", "onnx"]


_MODEL_EXAMPLE: dict[str, Any] = {
    "id": _EXAMPLE_MODEL_ID,
    "name": "movies-apl-baseline",
    "job_id": _EXAMPLE_JOB_ID,
    "dataset_id": _EXAMPLE_DATASET_ID,
    "dataset_name": "movie-genres",
    "loss": "apl",
    "sweep_id": None,
    "role": None,
    "kind": "fine_tuned",
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
    "decision": {
        "policy": "max_f1",
        "target": None,
        "min_labels": 1,
        "calibration": "auto",
        "temperatures": {"action": 1.0, "comedy": 1.0, "drama": 1.0},
        "threshold_sources": {"action": "tuned", "comedy": "tuned", "drama": "fallback"},
        "calibration_methods": {"action": "platt", "comedy": "isotonic", "drama": "none"},
    },
    "evaluation_url": f"/v1/models/{_EXAMPLE_MODEL_ID}/evaluation",
    "artifact": {
        "sha256": _EXAMPLE_SHA,
        "size_bytes": 90_931_200,
        "url": f"/v1/models/{_EXAMPLE_MODEL_ID}/artifact",
        "formats": ["tar", "onnx"],
    },
    "created_at": "2026-01-15T09:41:12.000000Z",
}


CalibrationName = Literal["auto", "platt", "isotonic", "temperature", "none"]
LabelCalibrationName = Literal["none", "temperature", "platt", "isotonic"]


class ModelDecision(BaseModel):
    policy: Literal["max_f1", "precision_at", "recall_at", "fixed"]
    target: float | None = Field(description="precision_at / recall_at: the target; fixed: the threshold.")
    min_labels: int = Field(description="The default min_labels of this model's predictions.")
    calibration: CalibrationName = Field(description="The calibration the job asked for.")
    temperatures: dict[str, float] = Field(
        description="Per label; a temperature-scaled label's scores are sigmoid(logit / temperature), "
        "every other label has 1 (see calibration_methods)."
    )
    threshold_sources: dict[str, Literal["tuned", "fallback"]] = Field(default_factory=dict)
    calibration_methods: dict[str, LabelCalibrationName] = Field(
        default_factory=dict,
        description="Per label, the calibrator chosen on held-out folds (empty for older models).",
    )


class Model(BaseModel):
    model_config = _examples(_MODEL_EXAMPLE)

    id: str
    name: str | None = Field(
        default=None,
        description="Your name for the model (set with PATCH /v1/models/{id}); until you set one, "
        "the name of the job that made it (null when neither has one).",
    )
    job_id: str = Field(description="The training job that made this model.")
    dataset_id: str | None = Field(description="The dataset it was trained on (null once deleted).")
    dataset_name: str | None = Field(default=None, description="That dataset's name (null once deleted).")
    loss: str | None = Field(
        default=None, description="The loss its job trained with (`spec.loss.name`: bce, focal, asl, apl...)."
    )
    sweep_id: str | None = Field(
        default=None, description="The sweep whose child job made this model (null for an ordinary job)."
    )
    role: Literal["trial", "replicate"] | None = Field(
        default=None,
        description="That job's part in its sweep (as the Job's `role`; null for an ordinary job). "
        "`kind` says which of a job's models this is.",
    )
    base_model: str = Field(description="The base model the job fine-tuned, as given in its spec.")
    modality: Literal["text", "image"]
    labels: list[str] = Field(description="Label names, in the order of the model's outputs.")
    thresholds: dict[str, float] = Field(
        description="Per-label decision thresholds on the calibrated scores, chosen on the validation "
        "split by the job's decision policy (default max_f1: the best F1 per label)."
    )
    threshold_fallback_labels: list[str] = Field(
        description="Labels with too few validation positives to tune: they use `global_threshold`."
    )
    global_threshold: float = GLOBAL_THRESHOLD
    metrics: dict[str, Any] = Field(
        description="Validation metrics of the best epoch; `baselines` holds the job's linear baselines."
    )
    kind: Literal["fine_tuned", "linear_probe"] = Field(
        default="fine_tuned",
        description="fine_tuned, or linear_probe: the frozen base model with a logistic-regression head, "
        "published because it beat the job's fine-tuned model on validation.",
    )
    comparison: str | None = Field(
        default=None,
        description="The job's models side by side, e.g. \"fine-tuned 0.710 vs linear probe 0.640 vs "
        'TF-IDF 0.630 (validation mAP)" (null for models published before baselines).',
    )
    warnings: list[str] = Field(default_factory=list, description="As the job's `warnings`.")
    decision: ModelDecision | None = Field(
        default=None,
        description="How the model decides (null for models published before decision policies: "
        "max_f1 thresholds on raw scores, min_labels 0).",
    )
    evaluation_url: str | None = Field(
        default=None, description="Its evaluation report (GET), when one was stored at publishing."
    )
    artifact: ModelArtifact
    created_at: datetime


class ModelUpdate(BaseModel):
    """What PATCH /v1/models/{id} takes: the model's name (null gives it back its job's name)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "genres v2 (apl)"}]})

    name: str | None = Field(
        min_length=1,
        max_length=NAME_MAX,
        description=f"1 to {NAME_MAX} printable characters; null removes your name.",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return printable_name(value)


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
    min_labels: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Return at least this many labels (the highest-scoring), applied after top_k. "
        "Default: the model's min_labels (its job's `decision.min_labels`, 0 unless set).",
    )


class Prediction(BaseModel):
    labels: list[str] = Field(
        description="The labels the decision rule chooses, highest score first: those at or above their "
        "threshold, cut to top_k, then topped up to min_labels."
    )
    scores: dict[str, float] = Field(
        description="The calibrated probability of every label, in the model's order."
    )
    added_by_min_labels: list[str] = Field(
        default_factory=list,
        description="The labels in `labels` that are there only because of min_labels (below their "
        "threshold, or cut by top_k).",
    )


_PREDICT_EXAMPLE: dict[str, Any] = {
    "model_id": _EXAMPLE_MODEL_ID,
    "predictions": [
        {
            "labels": ["drama", "action"],
            "scores": {"action": 0.62, "comedy": 0.08, "drama": 0.91},
            "added_by_min_labels": [],
        },
        {
            "labels": ["action"],
            "scores": {"action": 0.31, "comedy": 0.12, "drama": 0.2},
            "added_by_min_labels": ["action"],
        },
    ],
    "thresholds": {"action": 0.41, "comedy": 0.37, "drama": 0.5},
    "min_labels": 1,
}


class PredictResponse(BaseModel):
    model_config = _examples(_PREDICT_EXAMPLE)

    model_id: str
    predictions: list[Prediction] = Field(description="One per input, in input order.")
    thresholds: dict[str, float] = Field(description="The thresholds this request applied, per label.")
    min_labels: int = Field(default=0, description="The min_labels this request applied.")


class PRCurve(BaseModel):
    precision: list[float]
    recall: list[float]
    thresholds: list[float] = Field(
        description="Ascending; point i is exactly `score >= thresholds[i]` on the split."
    )


class LabelEvaluation(BaseModel):
    label: str
    support: int = Field(description="Positives of this label in the split.")
    ap: float | None = Field(description="Average precision (null without a positive).")
    threshold: float
    threshold_source: Literal["tuned", "fallback"] = Field(
        description="tuned: set by the job's decision policy (for `fixed`, its target); fallback: the "
        "evidence could not carry a tuned threshold (threshold_reason says why), the global threshold."
    )
    threshold_reason: str | None = Field(
        default=None, description="Why the label kept the fallback threshold; null for a tuned one."
    )
    target_reached: bool | None = Field(
        description="precision_at / recall_at: whether the target was reached on the split; else null."
    )
    precision: float = Field(description="At the threshold, on the split.")
    recall: float
    f1: float
    temperature: float = Field(description="A temperature-scaled label's T; 1 for every other.")
    calibration: LabelCalibrationName | None = Field(
        default=None, description="The calibrator chosen for this label on held-out folds."
    )
    calibration_reason: str | None = Field(
        default=None, description="The held-out evidence for that choice (or why none)."
    )
    pr_curve: PRCurve = Field(description="At most 101 points, both ends kept.")


class ReliabilityBin(BaseModel):
    lower: float
    upper: float
    count: int = Field(description="Label cells whose score falls in [lower, upper).")
    confidence: float | None = Field(description="Their mean score (null when empty).")
    frequency: float | None = Field(description="The fraction of them that are positive.")


class Reliability(BaseModel):
    before: list[ReliabilityBin]
    after: list[ReliabilityBin]


class LabelCalibrationChoice(BaseModel):
    method: LabelCalibrationName
    reason: str | None


class CalibrationBlock(BaseModel):
    method: CalibrationName
    ece_before: float = Field(description="ECE of the raw sigmoid scores: 15 equal-width bins, all cells.")
    ece_after: float = Field(
        description="ECE of the calibrated scores, the same way, on cells no calibrator was fitted on "
        "(ece_measured_on says which)."
    )
    ece_measured_on: str | None = Field(default=None, description="Where ece_after was measured.")
    per_label: dict[str, LabelCalibrationChoice] | None = Field(
        default=None, description="Per label, the calibrator chosen and why (absent for older models)."
    )
    ece_bins: int = 15
    temperatures: dict[str, float]
    reliability: Reliability


class EvaluationDecision(BaseModel):
    policy: Literal["max_f1", "precision_at", "recall_at", "fixed"]
    target: float | None
    min_labels: int
    rule: str


class LabelGroups(BaseModel):
    frequent: list[str] = Field(description="The most frequent third of the labels.")
    rare: list[str] = Field(description="The least frequent third.")
    counted_on: str = Field(description="Where frequency was counted (the training split).")


class MinLabelsScores(BaseModel):
    micro_f1: float
    macro_f1: float


class Evaluation(BaseModel):
    model_id: str
    split: Literal["validation", "test"]
    num_samples: int
    map: float = Field(description="Macro AP over the labels with a positive in the split.")
    micro_f1: float = Field(description="At the thresholds (without min_labels).")
    macro_f1: float = Field(description="At the thresholds, over the labels with a positive.")
    map_frequent: float | None = Field(description="mAP over the most frequent third of the labels.")
    map_rare: float | None = Field(description="mAP over the least frequent third of the labels.")
    label_groups: LabelGroups
    decision: EvaluationDecision
    calibration: CalibrationBlock
    with_min_labels: MinLabelsScores | None = Field(
        default=None, description="F1 of the whole decision rule with the model's min_labels (when > 0)."
    )
    per_label: list[LabelEvaluation]
    baselines: dict[str, Any] | None = Field(
        default=None,
        description="The job's linear baselines on validation (and test, with a test split) beside its "
        "fine-tuned model: `comparison`, `selected` and per baseline map, micro_f1, macro_f1, C, features.",
    )


_LABEL_ISSUE_EXAMPLE: dict[str, Any] = {
    "rank": 1,
    "index": 412,
    "score": 0.031,
    "flagged": True,
    "given_labels": ["comedy"],
    "unknown_labels": ["drama"],
    "disagreements": [
        {"label": "comedy", "given": True, "score": 0.04},
        {"label": "horror", "given": False, "score": 0.93},
    ],
    "text": "The Shining (1980)",
    "image": None,
}


class LabelDisagreement(BaseModel):
    label: str
    given: bool = Field(description="Whether the sample carries the label; the model decides the other way.")
    score: float = Field(description="The model's (calibrated) score for the label.")


class LabelIssue(BaseModel):
    rank: int = Field(description="1 = the most suspect sample.")
    index: int = Field(description="The sample's position in the dataset (0-based, in upload order).")
    score: float = Field(description="cleanlab's label-quality score in [0, 1]; low = likely mislabelled.")
    flagged: bool = Field(description="cleanlab's filter.find_label_issues flags the sample as mislabelled.")
    given_labels: list[str]
    unknown_labels: list[str] = Field(description="Labels the sample leaves unknown (never disagreements).")
    disagreements: list[LabelDisagreement] = Field(
        description="Annotated labels the model decides the other way at its thresholds, surest first."
    )
    text: str | None = Field(description="A text sample's text (its first 500 characters).")
    image: str | None = Field(description="An image sample's path inside the dataset (images/<member>).")


class ExcludedLabel(BaseModel):
    label: str
    ap: float | None = Field(description="The label's validation AP (null without positives and negatives).")
    prevalence: float = Field(description="Its share of positives among the known validation cells.")
    bar: float = Field(description="The AP it needed: prevalence + 0.75 * (1 - prevalence).")
    positives: int
    reason: str = Field(description="Why the model cannot judge this label's annotations.")


class LabelIssueList(BaseModel):
    model_config = _examples(
        {
            "model_id": "7c0d5e8a-1b2f-4c3d-9e4f-5a6b7c8d9e0f",
            "dataset_id": "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55",
            "split": "validation",
            "num_samples": 300,
            "num_flagged": 9,
            "method": "cleanlab.multilabel_classification ...",
            "items": [_LABEL_ISSUE_EXAMPLE],
            "next_cursor": None,
        }
    )

    model_id: str
    dataset_id: str | None
    split: Literal["validation"] = Field(
        description="Only validation samples are checked: cleanlab needs out-of-sample probabilities, "
        "and the model was fit on its training samples."
    )
    num_samples: int = Field(description="Validation samples ranked (all pages together).")
    num_flagged: int
    method: str
    judged_labels: list[str] | None = Field(
        default=None, description="Labels the ranking judges (null for rankings made before judging)."
    )
    excluded_labels: list[ExcludedLabel] = Field(
        default_factory=list, description="Labels the model cannot judge, left out of the ranking, and why."
    )
    verdict: str | None = Field(
        default=None, description="Set when the model can judge no label: then no sample is ranked."
    )
    items: list[LabelIssue]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")
