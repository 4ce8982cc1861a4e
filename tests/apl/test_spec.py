"""LossSpec and JobSpec: presets and base-model defaults fill what a job leaves out, what it sets wins."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import BaseModel, ValidationError

from apl.catalog import FAMILY_DEFAULTS, list_base_models, resolve_base_model
from apl.spec import LOSS_PARAMETERS, LOSS_PRESETS, Hyperparameters, JobSpec, LossSpec

PRESET_TABLE = {  # docs/losses.md, "Presets"
    "bce": (1.0, 0.5, 1.0, 0.0, 0.0, 0.0),
    "focal": (1.0, 0.5, 1.0, 2.0, 2.0, 0.0),
    "asl": (1.0, 0.5, 1.0, 1.0, 4.0, 0.05),
    "apl": (0.0, 1.75, 1.0, 0.0, 4.0, 0.05),
}


@pytest.mark.parametrize("name", sorted(PRESET_TABLE))
def test_preset_fills_every_parameter(name: str) -> None:
    spec = LossSpec(name=name)
    assert spec.parameters() == dict(zip(LOSS_PARAMETERS, PRESET_TABLE[name], strict=True))
    assert LOSS_PRESETS[name] == spec.parameters()
    assert spec.detach_focal_weight is True


def test_default_is_apl() -> None:
    assert LossSpec().name == "apl"
    assert JobSpec(dataset_id="d", base_model="m").loss.parameters() == LOSS_PRESETS["apl"]


def test_overrides_are_kept_and_the_rest_comes_from_the_preset() -> None:
    spec = LossSpec(name="asl", gamma_neg=2.0, clip=0.1, detach_focal_weight=False)
    assert spec.parameters() == {**LOSS_PRESETS["asl"], "gamma_neg": 2.0, "clip": 0.1}
    assert spec.detach_focal_weight is False


def test_zero_override_is_not_replaced_by_the_preset() -> None:
    spec = LossSpec(name="apl", gamma_neg=0.0, clip=0.0, alpha2=0.0)
    assert spec.parameters()["gamma_neg"] == 0.0
    assert spec.parameters()["clip"] == 0.0
    assert spec.parameters()["alpha2"] == 0.0


def test_negative_alpha_and_beta_are_allowed() -> None:
    spec = LossSpec(name="apl", alpha1=-0.5, alpha2=-1.0, beta=-2.0)
    assert (spec.alpha1, spec.alpha2, spec.beta) == (-0.5, -1.0, -2.0)


@pytest.mark.parametrize("field", ["gamma_pos", "gamma_neg"])
def test_gammas_must_be_non_negative(field: str) -> None:
    with pytest.raises(ValidationError):
        LossSpec(**{field: -0.1})
    assert getattr(LossSpec(**{field: 0.0}), field) == 0.0


@pytest.mark.parametrize("clip", [-0.01, 1.0, 1.5])
def test_clip_outside_zero_one_is_rejected(clip: float) -> None:
    with pytest.raises(ValidationError):
        LossSpec(clip=clip)


@pytest.mark.parametrize("clip", [0.0, 0.5, 0.999])
def test_clip_inside_zero_one_is_accepted(clip: float) -> None:
    assert LossSpec(clip=clip).clip == clip


@pytest.mark.parametrize("field", ["alpha1", "alpha2", "beta", "gamma_pos", "gamma_neg", "clip"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        LossSpec(**{field: value})


@pytest.mark.parametrize("field", ["alpha1", "beta"])
@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_in_json_are_rejected(field: str, raw: str) -> None:
    with pytest.raises(ValidationError):
        LossSpec.model_validate_json(f'{{"name": "apl", "{field}": {raw}}}')


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(ValidationError):
        LossSpec.model_validate({"name": "softmax"})


def test_extra_keys_are_rejected() -> None:
    with pytest.raises(ValidationError):
        LossSpec.model_validate({"name": "apl", "gamma": 2.0})
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"dataset_id": "d", "base_model": "m", "loss": {"name": "apl", "eps": 1e-8}})


def test_json_round_trip_keeps_every_value() -> None:
    spec = LossSpec(name="focal", gamma_pos=1.5, detach_focal_weight=False)
    dumped = spec.model_dump_json()
    assert set(json.loads(dumped)) == {"name", *LOSS_PARAMETERS, "detach_focal_weight"}
    again = LossSpec.model_validate_json(dumped)
    assert again == spec
    assert again.parameters() == {**LOSS_PRESETS["focal"], "gamma_pos": 1.5}


def test_stored_spec_is_stable_when_presets_would_change() -> None:
    """A stored job keeps the values it ran with: re-validating the dump fills nothing new."""
    dumped = LossSpec(name="apl").model_dump()
    assert all(dumped[key] is not None for key in LOSS_PARAMETERS)
    assert LossSpec.model_validate(dumped).model_dump() == dumped


def test_job_spec_round_trip_through_json() -> None:
    job = JobSpec(dataset_id="d", base_model="m", loss=LossSpec(name="asl", clip=0.1))
    assert JobSpec.model_validate_json(job.model_dump_json()) == job


def test_a_job_left_without_hyperparameters_takes_its_base_models_defaults() -> None:
    for entry in list_base_models():
        hyperparameters = JobSpec(dataset_id="d", base_model=entry.name).hyperparameters
        for key, value in entry.defaults.as_hyperparameters().items():
            assert getattr(hyperparameters, key) == value, (entry.name, key)
    cnn = resolve_base_model("mobilenetv2-100").defaults
    assert cnn.image_size is not None and cnn.max_length is None
    assert cnn.learning_rate != Hyperparameters().learning_rate  # not the transformer's 5e-5


def test_a_field_the_spec_sets_wins_even_at_the_generic_default() -> None:
    chosen = {"learning_rate": 5e-5, "image_size": 224, "epochs": 7}
    spec = JobSpec(dataset_id="d", base_model="efficientnet-lite0", hyperparameters=chosen)
    assert {key: getattr(spec.hyperparameters, key) for key in chosen} == chosen
    assert spec.hyperparameters.batch_size == resolve_base_model("efficientnet-lite0").defaults.batch_size


def test_timm_and_hf_references_take_their_familys_defaults_and_unknown_names_the_generic_ones() -> None:
    timm = JobSpec(dataset_id="d", base_model="timm:resnet18").hyperparameters
    assert (timm.learning_rate, timm.image_size) == (
        FAMILY_DEFAULTS["image"].learning_rate,
        FAMILY_DEFAULTS["image"].image_size,
    )
    hf = JobSpec(dataset_id="d", base_model="hf:/some/encoder").hyperparameters
    text = FAMILY_DEFAULTS["text"]
    assert (hf.learning_rate, hf.max_length) == (text.learning_rate, text.max_length)
    # The API refuses an unknown name; the spec alone leaves the generic values in place.
    assert JobSpec(dataset_id="d", base_model="gpt-17").hyperparameters == Hyperparameters()


def test_a_stored_spec_reads_back_unchanged_and_the_callers_object_is_not_touched() -> None:
    given = Hyperparameters(epochs=2)
    spec = JobSpec(dataset_id="d", base_model="mobilenetv2-100", hyperparameters=given)
    assert given.learning_rate == Hyperparameters().learning_rate and given.model_fields_set == {"epochs"}
    stored = spec.model_dump(mode="json")
    assert JobSpec.model_validate(stored).model_dump(mode="json") == stored
    # Read back as another base model's job, the stored values stay: every field is set.
    other = JobSpec.model_validate({**stored, "base_model": "minilm-l6"})
    assert other.hyperparameters == spec.hyperparameters


def test_a_spec_placed_in_another_model_keeps_its_hyperparameters_object() -> None:
    """pydantic runs a model's after-validators again for an instance inside another model
    (each Job document holds its JobSpec): with nothing left to fill, nothing is copied."""

    class Holder(BaseModel):
        spec: JobSpec

    spec = JobSpec(dataset_id="d", base_model="mobilenetv2-100")
    held = Holder(spec=spec).spec
    assert held.hyperparameters is spec.hyperparameters
    assert held.hyperparameters.image_size == resolve_base_model("mobilenetv2-100").defaults.image_size
