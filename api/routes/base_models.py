"""The catalog of base models a job can fine-tune."""

from __future__ import annotations

from dataclasses import asdict

from api.deps import OwnerDep
from api.routing import APIRouter
from api.schemas import BaseModelDefaults, BaseModelEntry, BaseModelList, problem_responses
from apl.catalog import FAMILY_DEFAULTS, TrainingDefaults, default_space, list_base_models

router = APIRouter(
    prefix="/v1/base-models", tags=["base models"], responses=problem_responses("unauthorized")
)


@router.get("", response_model=BaseModelList)
def list_catalog(_principal: OwnerDep) -> BaseModelList:
    """Built-in base models whose weights are on local disk.

    A job may also name `timm:<architecture>` (random initialisation) or
    `hf:<local directory or hub id>` (a transformers encoder). Each entry's `defaults`
    are what a job or sweep for it trains with where the spec leaves a field out.
    """
    return BaseModelList(
        items=[
            BaseModelEntry(
                name=entry.name,
                modality=entry.modality,
                family=entry.family,
                pretrained=entry.pretrained,
                description=entry.description,
                defaults=_defaults(entry.defaults),
                space=default_space(entry.name) or {},
            )
            for entry in list_base_models()
        ],
        family_defaults={modality: _defaults(values) for modality, values in FAMILY_DEFAULTS.items()},
    )


def _defaults(values: TrainingDefaults) -> BaseModelDefaults:
    return BaseModelDefaults.model_validate(asdict(values))
