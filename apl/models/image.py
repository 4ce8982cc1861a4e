"""timm image networks with a multi-label head."""

from __future__ import annotations

import torch
from torch import nn

from apl.errors import ModelUnavailableError


class ImageClassifier(nn.Module):
    """A timm network whose classifier has one logit per label."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.backbone(pixel_values)
        return logits


def create_timm(arch: str, num_classes: int) -> nn.Module:
    """`timm.create_model(arch, pretrained=False)`, with a clear error for unknown names."""
    import timm

    if not timm.is_model(arch):
        raise ModelUnavailableError(f"timm has no architecture named '{arch}'")
    try:
        model: nn.Module = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelUnavailableError(f"timm cannot build '{arch}' ({exc})") from exc
    return model
