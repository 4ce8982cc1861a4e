"""Turning a base-model name from a job into a ready-to-train `nn.Module`.

Built-in entries load weights shipped inside installed packages (never the network);
`timm:<arch>` is a random initialisation; `hf:<dir or id>` loads a transformers
encoder (from the hub only when the caller allows downloads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from apl.catalog import BaseModelInfo, Family, Modality, UnknownBaseModel, resolve_base_model
from apl.errors import ModelUnavailableError
from apl.models.image import ImageClassifier, create_timm
from apl.models.text import TextClassifier, hidden_size_of, load_encoder
from apl.models.weights import (
    EFFICIENTNET_LITE0_FILE,
    EFFICIENTNET_LITE0_PACKAGE,
    MINILM_DIR,
    MINILM_PACKAGE,
    MOBILENET_V2_FILE,
    MOBILENET_V2_PACKAGE,
    StateDict,
    load_state_dict_file,
    map_efficientnet_lite0,
    map_torchvision_mobilenet_v2,
    package_path,
)

IMAGENET_CLASSES = 1000
#: Tokenizers without a real limit declare a huge model_max_length; anything above this is "none".
VERY_LONG = 1_000_000


@dataclass(frozen=True)
class _PretrainedImage:
    arch: str
    package: str
    file: str
    mapper: Callable[[StateDict, nn.Module], StateDict]
    #: Preprocessing the weights were trained with, where it differs from timm's config for `arch`.
    preprocessing: dict[str, Any] = field(default_factory=dict)


_PRETRAINED_IMAGE: dict[str, _PretrainedImage] = {
    "mobilenetv2-100": _PretrainedImage(
        arch="mobilenetv2_100",
        package=MOBILENET_V2_PACKAGE,
        file=MOBILENET_V2_FILE,
        mapper=map_torchvision_mobilenet_v2,
        # torchvision's ImageNet recipe: bilinear resizing, ImageNet mean/std.
        preprocessing={"interpolation": "bilinear"},
    ),
    "efficientnet-lite0": _PretrainedImage(
        arch="tf_efficientnet_lite0",
        package=EFFICIENTNET_LITE0_PACKAGE,
        file=EFFICIENTNET_LITE0_FILE,
        mapper=map_efficientnet_lite0,
    ),
}


@dataclass
class BuiltModel:
    """A model ready to train plus what is needed to feed it and to save it as an artifact."""

    info: BaseModelInfo
    #: timm architecture, or the transformers `model_type` (e.g. "bert").
    architecture: str
    module: nn.Module
    #: The transformers tokenizer (text models only).
    tokenizer: Any | None
    #: Image: image_size, mean, std, interpolation. Text: max_length.
    preprocessing: dict[str, Any]
    #: Width of the pooled text embedding (text models only).
    hidden_size: int | None = None

    @property
    def modality(self) -> Modality:
        return self.info.modality

    @property
    def family(self) -> Family:
        return self.info.family


def pretrained_image_backbone(name: str) -> nn.Module:
    """A built-in image network with its packaged ImageNet weights and 1000-class head."""
    entry = _PRETRAINED_IMAGE[name]
    model = create_timm(entry.arch, IMAGENET_CLASSES)
    state = load_state_dict_file(package_path(entry.package, entry.file))
    model.load_state_dict(entry.mapper(state, model), strict=True)
    return model


def minilm_directory() -> str:
    return str(package_path(MINILM_PACKAGE, MINILM_DIR))


def _build_image(info: BaseModelInfo, num_labels: int, image_size: int) -> BuiltModel:
    from apl.data.images import resolve_preprocessing

    entry = _PRETRAINED_IMAGE.get(info.name)
    if entry is not None:
        backbone = pretrained_image_backbone(info.name)
        backbone.reset_classifier(num_labels)  # type: ignore[operator]
        arch, overrides = entry.arch, entry.preprocessing
    else:
        backbone = create_timm(info.source, num_labels)
        arch, overrides = info.source, {}
    preprocessing = resolve_preprocessing(backbone, image_size, overrides)
    return BuiltModel(
        info=info,
        architecture=arch,
        module=ImageClassifier(backbone),
        tokenizer=None,
        preprocessing=preprocessing,
    )


def position_limit(encoder: nn.Module, tokenizer: Any) -> int:
    """The longest input the encoder accepts; a longer `max_length` would index past its positions."""
    limits = [VERY_LONG]
    positions = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < VERY_LONG:
        limits.append(declared)
    return min(limits)


def _build_text(info: BaseModelInfo, num_labels: int, max_length: int, allow_download: bool) -> BuiltModel:
    source = minilm_directory() if info.name == "minilm-l6" else info.source
    encoder, tokenizer = load_encoder(source, local_only=not allow_download)
    hidden = hidden_size_of(encoder, tokenizer)
    model_type = str(getattr(getattr(encoder, "config", None), "model_type", "unknown"))
    return BuiltModel(
        info=info,
        architecture=model_type,
        module=TextClassifier(encoder, hidden, num_labels),
        tokenizer=tokenizer,
        preprocessing={"max_length": min(max_length, position_limit(encoder, tokenizer))},
        hidden_size=hidden,
    )


def build_model(
    base_model: str,
    num_labels: int,
    *,
    image_size: int = 224,
    max_length: int = 128,
    allow_download: bool = False,
) -> BuiltModel:
    """Build the classifier for `base_model` with a fresh `num_labels`-way head.

    Raises ModelUnavailableError (code `model_unavailable`) whenever the model cannot
    be had: unknown name, unknown timm architecture, missing weights package, a hub
    id without network, or a transformers model that is not an encoder.
    """
    if num_labels < 1:
        raise ValueError("num_labels must be at least 1")
    try:
        info = resolve_base_model(base_model)
    except UnknownBaseModel as exc:
        raise ModelUnavailableError(str(exc)) from exc
    if info.family == "timm":
        return _build_image(info, num_labels, image_size)
    return _build_text(info, num_labels, max_length, allow_download)
