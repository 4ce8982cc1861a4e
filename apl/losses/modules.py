"""nn.Module front ends, one class per preset of docs/losses.md.

The classes differ only in their default parameters (taken from `apl.spec.LOSS_PRESETS`,
the one table of presets), so a job's ``loss`` object maps
onto exactly one class and every value stays overridable. Modules hold Python
numbers only: no tensors survive between calls, so a module can be shared across
devices and dtypes.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from apl.losses._fused import Backend
from apl.losses.functional import asymmetric_polynomial_loss
from apl.spec import LOSS_PRESETS


class AsymmetricPolynomialLoss(nn.Module):
    """APL (preset ``apl``): alpha1=0, alpha2=1.75, beta=1, gamma_pos=0, gamma_neg=4, clip=0.05.

    A parameter left as None takes the class's preset value.
    """

    preset: ClassVar[str] = "apl"

    def __init__(
        self,
        *,
        alpha1: float | None = None,
        alpha2: float | None = None,
        beta: float | None = None,
        gamma_pos: float | None = None,
        gamma_neg: float | None = None,
        clip: float | None = None,
        detach_focal_weight: bool = True,
        reduction: str = "sum",
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        given = {
            "alpha1": alpha1,
            "alpha2": alpha2,
            "beta": beta,
            "gamma_pos": gamma_pos,
            "gamma_neg": gamma_neg,
            "clip": clip,
        }
        values = {k: float(LOSS_PRESETS[self.preset][k] if v is None else v) for k, v in given.items()}
        self.alpha1 = values["alpha1"]
        self.alpha2 = values["alpha2"]
        self.beta = values["beta"]
        self.gamma_pos = values["gamma_pos"]
        self.gamma_neg = values["gamma_neg"]
        self.clip = values["clip"]
        self.detach_focal_weight = detach_focal_weight
        self.reduction = reduction
        self.backend: Backend = backend
        # Validate now rather than at the first batch of a training run.
        from apl.losses.functional import _check_parameters

        _check_parameters(self.parameters_dict(), reduction)

    def parameters_dict(self) -> dict[str, float]:
        """The six loss parameters (named so as not to clash with nn.Module.parameters)."""
        return {
            "alpha1": self.alpha1,
            "alpha2": self.alpha2,
            "beta": self.beta,
            "gamma_pos": self.gamma_pos,
            "gamma_neg": self.gamma_neg,
            "clip": self.clip,
        }

    def forward(
        self, logits: Tensor, targets: Tensor, *, weight: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """See ``apl.losses.functional.asymmetric_polynomial_loss`` for weight, mask and reductions."""
        return asymmetric_polynomial_loss(
            logits,
            targets,
            **self.parameters_dict(),
            detach_focal_weight=self.detach_focal_weight,
            reduction=self.reduction,
            weight=weight,
            mask=mask,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        values = ", ".join(f"{k}={v:g}" for k, v in self.parameters_dict().items())
        return f"{values}, detach_focal_weight={self.detach_focal_weight}, reduction={self.reduction!r}"


class BinaryCrossEntropyLoss(AsymmetricPolynomialLoss):
    """BCE (preset ``bce``): alpha1=1, alpha2=0.5, beta=1, no focusing, no clip."""

    preset = "bce"


class FocalLoss(AsymmetricPolynomialLoss):
    """Focal loss (preset ``focal``): BCE terms with gamma_pos = gamma_neg = 2."""

    preset = "focal"


class AsymmetricLoss(AsymmetricPolynomialLoss):
    """ASL (preset ``asl``, official class defaults): gamma_pos=1, gamma_neg=4, clip=0.05."""

    preset = "asl"
