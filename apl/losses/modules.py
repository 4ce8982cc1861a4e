"""nn.Module front ends, one class per preset of docs/losses.md.

The classes differ only in their default parameters (taken from `apl.spec.LOSS_PRESETS`,
the one table of presets), so a job's ``loss`` object maps
onto exactly one class and every value stays overridable. Modules hold Python
numbers only: no tensors survive between calls, so a module can be shared across
devices and dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from apl.losses._fused import Backend
from apl.losses.functional import asymmetric_polynomial_loss
from apl.losses.robust import LabelStatistics, db_loss_with, hill_loss, splc_loss, two_way_loss
from apl.spec import LOSS_PRESETS, ROBUST_LOSS_PRESETS


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


def _preset(name: str, **given: float | None) -> dict[str, float]:
    """The preset's values with the given (not None) ones in their place."""
    preset = ROBUST_LOSS_PRESETS[name]
    return {key: float(preset[key] if value is None else value) for key, value in given.items()}


class HillLoss(nn.Module):
    """Hill (preset ``hill``): lamb=1.5, margin=1, gamma=2 (the official defaults)."""

    def __init__(
        self,
        *,
        lamb: float | None = None,
        margin: float | None = None,
        gamma: float | None = None,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.values = _preset("hill", lamb=lamb, margin=margin, gamma=gamma)
        self.reduction = reduction
        hill_loss(torch.zeros(1, 1), torch.zeros(1, 1), **self.values, reduction=reduction)  # validates

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """See ``apl.losses.robust.hill_loss``."""
        return hill_loss(logits, targets, **self.values, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"{_format(self.values)}, reduction={self.reduction!r}"


class SPLCLoss(nn.Module):
    """SPLC (preset ``splc``): tau=0.6, margin=1, gamma=2, correcting from epoch 2 (counted from 1).

    The training loop calls `set_epoch` at the start of every epoch; before the first
    call (and before `change_epoch`) no negative is corrected.
    """

    def __init__(
        self,
        *,
        tau: float | None = None,
        margin: float | None = None,
        gamma: float | None = None,
        change_epoch: float | None = None,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        values = _preset("splc", tau=tau, margin=margin, gamma=gamma, change_epoch=change_epoch)
        self.change_epoch = int(values.pop("change_epoch"))
        self.values = values
        self.reduction = reduction
        self.epoch = 0
        self._loss(torch.zeros(1, 1), torch.zeros(1, 1))  # validates

    def set_epoch(self, epoch: int) -> None:
        """The epoch (from 1) about to be trained: from `change_epoch` on, negatives are corrected."""
        self.epoch = epoch

    @property
    def correct(self) -> bool:
        return self.epoch >= self.change_epoch

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """See ``apl.losses.robust.splc_loss``."""
        return self._loss(logits, targets)

    def _loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        v = self.values
        return splc_loss(
            logits,
            targets,
            tau=v["tau"],
            margin=v["margin"],
            gamma=v["gamma"],
            correct=self.correct,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"{_format(self.values)}, change_epoch={self.change_epoch}, reduction={self.reduction!r}"


class DistributionBalancedLoss(nn.Module):
    """Distribution-Balanced loss (preset ``dbl``, the official DB-Focal setting).

    ``label_counts`` (known positives per label) and ``num_samples`` come from the
    training split only; the training loop passes them (`apl.losses.build_loss`). What
    depends on them alone (``1/n_c``, the prior bias) is computed here once, not per batch.
    """

    def __init__(
        self,
        *,
        label_counts: Sequence[float],
        num_samples: float,
        map_alpha: float | None = None,
        map_beta: float | None = None,
        map_gamma: float | None = None,
        init_bias: float | None = None,
        neg_scale: float | None = None,
        gamma: float | None = None,
        balance: float | None = None,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.values = _preset(
            "dbl",
            map_alpha=map_alpha,
            map_beta=map_beta,
            map_gamma=map_gamma,
            init_bias=init_bias,
            neg_scale=neg_scale,
            gamma=gamma,
            balance=balance,
        )
        self.label_counts = [float(v) for v in label_counts]
        self.num_samples = float(num_samples)
        self.reduction = reduction
        self.statistics = LabelStatistics(
            self.label_counts,
            self.num_samples,
            init_bias=self.values["init_bias"],
            neg_scale=self.values["neg_scale"],
        )
        probe = torch.zeros(1, len(self.label_counts))
        self._loss(probe, probe)  # validates

    def _loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return db_loss_with(logits, targets, self.statistics, self.values, self.reduction)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """See ``apl.losses.robust.distribution_balanced_loss``."""
        return self._loss(logits, targets)

    def extra_repr(self) -> str:
        return f"{_format(self.values)}, classes={len(self.label_counts)}, num_samples={self.num_samples:g}"


class TwoWayLoss(nn.Module):
    """Two-way loss (preset ``twoway``): tp=4, tn=1 (the official defaults).

    ``reduction="sum"`` (what the training loop uses) is the official value times the
    batch size, so the loop's division by the batch size gives the official value back.
    """

    def __init__(self, *, tp: float | None = None, tn: float | None = None, reduction: str = "sum") -> None:
        super().__init__()
        self.values = _preset("twoway", tp=tp, tn=tn)
        self.reduction = reduction
        two_way_loss(torch.zeros(1, 1), torch.zeros(1, 1), **self.values, reduction=reduction)  # validates

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """See ``apl.losses.robust.two_way_loss``."""
        return two_way_loss(logits, targets, **self.values, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"{_format(self.values)}, reduction={self.reduction!r}"


def _format(values: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:g}" for key, value in values.items())
