"""From a job's ``loss`` object (LossSpec) to a loss module."""

from __future__ import annotations

from apl.losses.modules import (
    AsymmetricLoss,
    AsymmetricPolynomialLoss,
    BinaryCrossEntropyLoss,
    FocalLoss,
)
from apl.spec import LossSpec

LOSS_CLASSES: dict[str, type[AsymmetricPolynomialLoss]] = {
    "bce": BinaryCrossEntropyLoss,
    "focal": FocalLoss,
    "asl": AsymmetricLoss,
    "apl": AsymmetricPolynomialLoss,
}


def build_loss(spec: LossSpec, reduction: str = "sum") -> AsymmetricPolynomialLoss:
    """The preset's module with the spec's (already preset-filled) parameters."""
    cls = LOSS_CLASSES[spec.name]
    p = spec.parameters()
    return cls(
        alpha1=p["alpha1"],
        alpha2=p["alpha2"],
        beta=p["beta"],
        gamma_pos=p["gamma_pos"],
        gamma_neg=p["gamma_neg"],
        clip=p["clip"],
        detach_focal_weight=spec.detach_focal_weight,
        reduction=reduction,
    )
