"""Model builders: transformers encoders and timm networks with multi-label heads."""

from apl.errors import ModelUnavailableError
from apl.models.builder import BuiltModel, build_model, minilm_directory, pretrained_image_backbone
from apl.models.image import ImageClassifier, create_timm
from apl.models.text import TextClassifier, mean_pool

__all__ = [
    "BuiltModel",
    "ImageClassifier",
    "ModelUnavailableError",
    "TextClassifier",
    "build_model",
    "create_timm",
    "mean_pool",
    "minilm_directory",
    "pretrained_image_backbone",
]
