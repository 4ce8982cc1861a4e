"""LossSpec: presets fill what a job leaves out, overrides survive, bad values are refused."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from apl.spec import LOSS_PARAMETERS, LOSS_PRESETS, JobSpec, LossSpec

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
