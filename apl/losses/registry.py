"""From a job's ``loss`` object (LossSpec) to a loss module."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from apl.losses.modules import (
    AsymmetricLoss,
    AsymmetricPolynomialLoss,
    BinaryCrossEntropyLoss,
    DistributionBalancedLoss,
    FocalLoss,
    HillLoss,
    SPLCLoss,
    TwoWayLoss,
)
from apl.spec import LossSpec

LOSS_CLASSES: dict[str, type[AsymmetricPolynomialLoss]] = {
    "bce": BinaryCrossEntropyLoss,
    "focal": FocalLoss,
    "asl": AsymmetricLoss,
    "apl": AsymmetricPolynomialLoss,
}

#: The losses for under-tagged and long-tailed data, by preset name.
ROBUST_LOSS_CLASSES: dict[str, type[nn.Module]] = {
    "hill": HillLoss,
    "splc": SPLCLoss,
    "dbl": DistributionBalancedLoss,
    "twoway": TwoWayLoss,
}


def build_loss(
    spec: LossSpec,
    reduction: str = "sum",
    *,
    label_counts: Sequence[float] | None = None,
    num_samples: int | None = None,
) -> nn.Module:
    """The preset's module with the spec's (already preset-filled) parameters.

    ``label_counts`` (known positives per label) and ``num_samples`` are those of the
    training split; only ``dbl`` uses them, and it needs them.
    """
    p = spec.parameters()
    if spec.name in LOSS_CLASSES:
        return LOSS_CLASSES[spec.name](
            alpha1=p["alpha1"],
            alpha2=p["alpha2"],
            beta=p["beta"],
            gamma_pos=p["gamma_pos"],
            gamma_neg=p["gamma_neg"],
            clip=p["clip"],
            detach_focal_weight=spec.detach_focal_weight,
            reduction=reduction,
        )
    if spec.name == "dbl":
        if label_counts is None or num_samples is None:
            raise ValueError("the dbl loss needs the training split's label_counts and num_samples")
        return DistributionBalancedLoss(
            label_counts=label_counts, num_samples=num_samples, **p, reduction=reduction
        )
    cls = ROBUST_LOSS_CLASSES[spec.name]
    return cls(**p, reduction=reduction)
