"""The loss family: BCE, focal, ASL and APL as one fused loss; Hill, SPLC, DBL and Two-way beside it."""

from apl.losses._fused import COMPILE_MIN_NUMEL, compile_enabled, reset_compiled_kernels, set_compile_enabled
from apl.losses.functional import asymmetric_polynomial_loss
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
from apl.losses.registry import LOSS_CLASSES, ROBUST_LOSS_CLASSES, build_loss
from apl.losses.robust import distribution_balanced_loss, hill_loss, splc_loss, two_way_loss

__all__ = [
    "COMPILE_MIN_NUMEL",
    "LOSS_CLASSES",
    "ROBUST_LOSS_CLASSES",
    "AsymmetricLoss",
    "AsymmetricPolynomialLoss",
    "BinaryCrossEntropyLoss",
    "DistributionBalancedLoss",
    "FocalLoss",
    "HillLoss",
    "SPLCLoss",
    "TwoWayLoss",
    "asymmetric_polynomial_loss",
    "build_loss",
    "compile_enabled",
    "distribution_balanced_loss",
    "hill_loss",
    "reset_compiled_kernels",
    "set_compile_enabled",
    "splc_loss",
    "two_way_loss",
]
