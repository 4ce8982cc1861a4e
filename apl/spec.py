"""Torch-free job specification schemas.

The API validates every job with these models before anything is queued, and the
worker rebuilds the same objects from the stored JSON, so both sides agree on
defaults without the API process ever importing torch.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from apl.catalog import TrainingDefaults, training_defaults

LossName = Literal["bce", "focal", "asl", "apl", "hill", "splc", "dbl", "twoway"]

#: Preset parameters per loss name (docs/losses.md, "Presets").
LOSS_PRESETS: dict[str, dict[str, float]] = {
    "bce": {"alpha1": 1.0, "alpha2": 0.5, "beta": 1.0, "gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0},
    "focal": {"alpha1": 1.0, "alpha2": 0.5, "beta": 1.0, "gamma_pos": 2.0, "gamma_neg": 2.0, "clip": 0.0},
    "asl": {"alpha1": 1.0, "alpha2": 0.5, "beta": 1.0, "gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05},
    "apl": {"alpha1": 0.0, "alpha2": 1.75, "beta": 1.0, "gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05},
}

LOSS_PARAMETERS = ("alpha1", "alpha2", "beta", "gamma_pos", "gamma_neg", "clip")

#: Presets of the losses for under-tagged and long-tailed data (docs/losses.md), each with
#: its own parameters and the official code's defaults. SPLC's `change_epoch` counts epochs
#: from 1: 2 is the official `change_epoch=1`, which counts from 0 (correction from the
#: second epoch on).
ROBUST_LOSS_PRESETS: dict[str, dict[str, float]] = {
    "hill": {"lamb": 1.5, "margin": 1.0, "gamma": 2.0},
    "splc": {"tau": 0.6, "margin": 1.0, "gamma": 2.0, "change_epoch": 2.0},
    "dbl": {
        "map_alpha": 0.1,
        "map_beta": 10.0,
        "map_gamma": 0.2,
        "init_bias": 0.05,
        "neg_scale": 2.0,
        "gamma": 2.0,
        "balance": 2.0,
    },
    "twoway": {"tp": 4.0, "tn": 1.0},
}

#: Every preset: name -> its parameters and their preset values.
ALL_LOSS_PRESETS: dict[str, dict[str, float]] = {**LOSS_PRESETS, **ROBUST_LOSS_PRESETS}

#: Every numeric parameter field of LossSpec, whichever preset it belongs to.
ALL_LOSS_PARAMETERS: tuple[str, ...] = tuple(
    dict.fromkeys(key for preset in ALL_LOSS_PRESETS.values() for key in preset)
)


def preset_fields(name: str) -> set[str]:
    """The LossSpec fields a preset takes besides `name` (its parameters, and the focusing flag)."""
    fields = set(ALL_LOSS_PRESETS[name])
    return fields | {"detach_focal_weight"} if name in LOSS_PRESETS else fields


#: The largest test split a job may hold out; beyond it too little is left to train on.
MAX_TEST_FRACTION = 0.5


class LossSpec(BaseModel):
    """A loss choice: a preset name plus optional overrides of that preset's parameters.

    Parameters left out take the preset's value, so `{"name": "apl"}` is a complete
    spec and the stored job always shows every value that was used. A parameter of
    another preset (say `clip` with `hill`) is refused, naming the field; a dump holds
    only the preset's own fields.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "apl"},
                {"name": "asl", "gamma_neg": 2.0, "clip": 0.1},
                {"name": "hill", "lamb": 1.5},
                {"name": "dbl", "neg_scale": 5.0},
            ]
        },
    )

    name: LossName = "apl"
    alpha1: float | None = Field(default=None, description="Coefficient of (1-p) for positives.")
    alpha2: float | None = Field(default=None, description="Coefficient of (1-p)^2 for positives.")
    beta: float | None = Field(default=None, description="Coefficient of p_m for negatives.")
    gamma_pos: float | None = Field(default=None, ge=0, description="Focusing exponent for positives.")
    gamma_neg: float | None = Field(default=None, ge=0, description="Focusing exponent for negatives.")
    clip: float | None = Field(
        default=None, ge=0, lt=1, description="Probability margin m that shifts easy negatives."
    )
    detach_focal_weight: bool = Field(
        default=True,
        description="bce/focal/asl/apl: the focusing weight is a constant in backward, as in the papers.",
    )
    lamb: float | None = Field(default=None, description="hill: the negatives' weight is (lamb - p).")
    margin: float | None = Field(default=None, description="hill, splc: logit margin of positives.")
    gamma: float | None = Field(default=None, ge=0, description="hill, splc, dbl: focusing exponent.")
    tau: float | None = Field(
        default=None, ge=0, le=1, description="splc: a negative above it turns positive."
    )
    change_epoch: float | None = Field(
        default=None, ge=1, le=1000, description="splc: first epoch (from 1) that corrects negatives."
    )
    map_alpha: float | None = Field(default=None, ge=0, description="dbl: floor of the rebalancing weight.")
    map_beta: float | None = Field(default=None, description="dbl: slope of the rebalancing map.")
    map_gamma: float | None = Field(default=None, description="dbl: shift of the rebalancing map.")
    init_bias: float | None = Field(default=None, description="dbl: scale of the prior logit bias.")
    neg_scale: float | None = Field(default=None, gt=0, description="dbl: scale of negatives' logits.")
    balance: float | None = Field(default=None, ge=0, description="dbl: overall loss weight.")
    tp: float | None = Field(default=None, gt=0, description="twoway: temperature of the positives.")
    tn: float | None = Field(default=None, gt=0, description="twoway: temperature of the negatives.")

    @field_validator(*ALL_LOSS_PARAMETERS)
    @classmethod
    def _finite(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value is not None and info.field_name == "change_epoch" and not value.is_integer():
            raise ValueError("must be a whole number of epochs")
        return cls._belongs(value, info)

    @field_validator("detach_focal_weight")
    @classmethod
    def _focusing_flag(cls, value: bool, info: ValidationInfo) -> bool:
        cls._belongs(value, info)
        return value

    @staticmethod
    def _belongs(value: float | bool | None, info: ValidationInfo) -> float | None:
        """Refuse a parameter of another preset (None, "take the preset's value", is always fine)."""
        name = info.data.get("name")
        if value is not None and name is not None and info.field_name not in preset_fields(name):
            own = ", ".join(sorted(preset_fields(name)))
            raise ValueError(f"not a parameter of the {name} loss (its parameters: {own})")
        return None if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _fill_preset(self) -> LossSpec:
        for key, default in ALL_LOSS_PRESETS[self.name].items():
            if getattr(self, key) is None:
                setattr(self, key, default)
        return self

    @model_serializer(mode="wrap")
    def _own_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Only `name` and the preset's own fields: the stored spec validates again as it is."""
        data: dict[str, object] = handler(self)
        keep = {"name", *preset_fields(self.name)}
        return {key: value for key, value in data.items() if key in keep}

    def parameters(self) -> dict[str, float]:
        """The preset's numeric parameters, all filled in."""
        return {key: float(getattr(self, key)) for key in ALL_LOSS_PRESETS[self.name]}


_MODEL_DEFAULT = "Left out: the base model's default (GET /v1/base-models, `defaults`)."


#: The most devices a job may ask for (one host's worth; several hosts are not supported).
MAX_DEVICES = 64


class Hyperparameters(BaseModel):
    """Training hyperparameters; every one has a default that trains a small model sensibly.

    `batch_size`, `learning_rate`, `image_size` and `max_length` left out of a JobSpec or
    SweepSpec take the base model's defaults (`fill_model_defaults`); `epochs` left out
    means a step budget stopped by evidence (`apl.training.budget`). The values below are
    only what a bare `Hyperparameters()` holds.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"epochs": 2, "batch_size": 32, "learning_rate": 2e-4, "seed": 0}]},
    )

    epochs: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Exactly this many epochs. Left out (null): train until validation mAP stops "
        "improving, within the base model's step budget (GET /v1/base-models, `defaults.budget`).",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description=_MODEL_DEFAULT)
    learning_rate: float = Field(default=5e-5, gt=0, le=1.0, description=_MODEL_DEFAULT)
    weight_decay: float = Field(default=0.01, ge=0, le=1.0)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    image_size: int = Field(default=224, ge=16, le=1024, description=f"Image models. {_MODEL_DEFAULT}")
    max_length: int = Field(default=128, ge=8, le=4096, description=f"Text models. {_MODEL_DEFAULT}")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    early_stopping_patience: Annotated[int, Field(ge=1, le=1000)] | None = None
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    grad_clip_norm: float | None = Field(default=1.0, gt=0)
    head_init: Literal["linear_probe", "random"] = Field(
        default="linear_probe",
        description="How the classification head starts. `linear_probe`: the job's linear probe (a logistic "
        "regression on the frozen base model's features, fitted on the training split), then the whole model "
        f"is fine-tuned from there (LP-FT); `random`: a freshly initialised head. {_MODEL_DEFAULT}",
    )
    devices: Annotated[int, Field(ge=1, le=MAX_DEVICES)] | Literal["auto"] = Field(
        default=1,
        description="Devices one job trains on at once (data-parallel, torch.distributed; the worker starts "
        "one process per device). 1: one process, as ever; `auto`: every device of the worker that takes it "
        "(the most that divide batch_size). batch_size is the global batch, split evenly across them.",
    )

    @field_validator("learning_rate", "weight_decay", "val_fraction", "warmup_fraction")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


H = TypeVar("H", bound=Hyperparameters)


@functools.lru_cache(maxsize=64)
def _default_items(defaults: TrainingDefaults) -> tuple[tuple[str, float | int | str], ...]:
    """The defaults as items, built once per entry: every Job document shown runs the check below."""
    return tuple(defaults.as_hyperparameters().items())


def fill_model_defaults(hyperparameters: H, base_model: str) -> H:
    """A copy with every field the client left out that the base model has a default for filled in.

    The one place per-base-model defaults are applied (JobSpec and SweepSpec call it when
    they are validated), so the stored spec shows the values a job trained with, and a
    field the client set, even to the generic default, always wins. A stored spec read
    back has every field set, so a catalog change never alters a job already made.
    An unresolvable name changes nothing: the API refuses it when it checks the job.
    With nothing to fill, the same object comes back: pydantic runs these validators again
    each time a spec is placed in another model (every Job document holds its JobSpec).
    """
    defaults = training_defaults(base_model)
    if defaults is None:
        return hyperparameters
    missing = {
        key: value for key, value in _default_items(defaults) if key not in hyperparameters.model_fields_set
    }
    if not missing:
        return hyperparameters
    filled = hyperparameters.model_copy()
    for key, value in missing.items():
        setattr(filled, key, value)  # marks it set, so an exclude_unset dump keeps it
    return filled


DecisionPolicy = Literal["max_f1", "precision_at", "recall_at", "fixed"]
CalibrationMethod = Literal["auto", "platt", "isotonic", "temperature", "none"]
#: Policies whose `target` is a precision or recall to reach on the validation split.
TARGET_POLICIES = ("precision_at", "recall_at")


class DecisionSpec(BaseModel):
    """How a model turns calibrated scores into labels: its thresholds' policy and `min_labels`.

    `max_f1` tunes each label's threshold for F1 on the validation split; `precision_at`
    takes the lowest threshold whose validation precision reaches `target`; `recall_at`
    the highest threshold whose validation recall stays at or above `target`; `fixed` uses
    `target` as every label's threshold. `min_labels` is the model's default for the
    decision rule (`apl.decisions`); a predict request may override it.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"policy": "max_f1", "min_labels": 1},
                {"policy": "precision_at", "target": 0.9},
                {"policy": "fixed", "target": 0.4},
            ]
        },
    )

    policy: DecisionPolicy = "max_f1"
    target: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="precision_at / recall_at: the value to reach on validation; fixed: the threshold.",
    )
    min_labels: int = Field(
        default=0, ge=0, le=1000, description="The fewest labels a prediction returns (the best-scoring)."
    )

    @model_validator(mode="after")
    def _target_fits_policy(self) -> DecisionSpec:
        if self.policy == "max_f1" and self.target is not None:
            raise ValueError("max_f1 takes no target; use precision_at, recall_at or fixed for one")
        if self.policy != "max_f1" and self.target is None:
            raise ValueError(f"the {self.policy} policy needs a target in [0, 1]")
        if self.policy in TARGET_POLICIES and self.target == 0.0:
            raise ValueError(f"a {self.policy} target of 0 is reached by any threshold; give one above 0")
        return self


class JobSpec(BaseModel):
    """What a client POSTs to /v1/jobs."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55",
                    "base_model": "minilm-l6",
                    "loss": {"name": "apl"},
                    "hyperparameters": {"epochs": 3, "seed": 0},
                    "decision": {"policy": "max_f1", "min_labels": 1},
                    "calibration": "temperature",
                }
            ]
        },
    )

    dataset_id: str = Field(min_length=1, max_length=64)
    base_model: str = Field(min_length=1, max_length=500)
    loss: LossSpec = Field(default_factory=LossSpec)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    decision: DecisionSpec = Field(
        default_factory=DecisionSpec,
        description="Threshold policy and min_labels (default: max-F1 thresholds, min_labels 0).",
    )
    calibration: CalibrationMethod = Field(
        default="auto",
        description="auto: per label, Platt (scale and bias, held near the identity for small supports) or "
        "isotonic (large supports), whichever lowers the held-out log loss, else none; platt / isotonic / "
        "temperature: that method where it lowers the held-out log loss; none: raw sigmoid.",
    )
    webhook_url: HttpUrl | None = Field(
        default=None,
        description="Called (POST, signed) when the job ends: succeeded, failed or cancelled.",
    )
    test_fraction: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TEST_FRACTION,
        description="Hold this fraction of the dataset out as a test split (split off first, "
        "stratified, from the seed); the best epoch is scored on it once. Never used for early "
        "stopping or threshold tuning.",
    )
    test_dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Score the best epoch once on this dataset instead (same labels and modality).",
    )

    @field_validator("test_fraction")
    @classmethod
    def _finite_fraction(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _base_model_defaults(self) -> JobSpec:
        self.hyperparameters = fill_model_defaults(self.hyperparameters, self.base_model)
        return self

    @model_validator(mode="after")
    def _devices_split_the_batch(self) -> JobSpec:
        """The global batch is split evenly across the devices (checked after the model's defaults)."""
        hp = self.hyperparameters
        if isinstance(hp.devices, int) and hp.batch_size % hp.devices:
            raise ValueError(
                f"hyperparameters.batch_size ({hp.batch_size}) must be a multiple of devices ({hp.devices}): "
                "the global batch is split evenly across them"
            )
        return self

    @model_validator(mode="after")
    def _one_test_split(self) -> JobSpec:
        if self.test_fraction is not None and self.test_dataset_id is not None:
            raise ValueError("give test_fraction or test_dataset_id, not both")
        return self
