"""The APL loss family: BCE, focal, ASL and APL as one exact, stable, fused loss."""

from apl.losses._fused import COMPILE_MIN_NUMEL, compile_enabled, reset_compiled_kernels, set_compile_enabled
from apl.losses.functional import asymmetric_polynomial_loss
from apl.losses.modules import (
    AsymmetricLoss,
    AsymmetricPolynomialLoss,
    BinaryCrossEntropyLoss,
    FocalLoss,
)
from apl.losses.registry import LOSS_CLASSES, build_loss

__all__ = [
    "COMPILE_MIN_NUMEL",
    "LOSS_CLASSES",
    "AsymmetricLoss",
    "AsymmetricPolynomialLoss",
    "BinaryCrossEntropyLoss",
    "FocalLoss",
    "asymmetric_polynomial_loss",
    "build_loss",
    "compile_enabled",
    "reset_compiled_kernels",
    "set_compile_enabled",
]
