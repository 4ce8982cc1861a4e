"""The asymmetric polynomial loss family as one function (docs/losses.md).

BCE, focal, ASL and APL are all this function with different parameters, so there
is one implementation to get exact, stable and fast, instead of four.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from apl.losses._fused import Backend, FusedLoss, run_kernel
from apl.losses._kernel import SMALL_CLIP, KernelConfig, integer_exponent
from apl.losses.robust import distribution_balanced_loss, hill_loss, splc_loss, two_way_loss

__all__ = [
    "asymmetric_polynomial_loss",
    "distribution_balanced_loss",
    "hill_loss",
    "splc_loss",
    "two_way_loss",
]

REDUCTIONS = ("sum", "mean", "none")


def _check_parameters(params: dict[str, float], reduction: str) -> None:
    for key, value in params.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
    if params["gamma_pos"] < 0 or params["gamma_neg"] < 0:
        raise ValueError("gamma_pos and gamma_neg must be >= 0")
    if not 0 <= params["clip"] < 1:
        raise ValueError("clip must satisfy 0 <= clip < 1")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


@functools.lru_cache(maxsize=64)
def _theta(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """The parameters as one small tensor (cached: building it costs as much as a small loss)."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.tensor(values, dtype=dtype, device=device)


def _negligible_clip(clip: float, dtype: torch.dtype) -> bool:
    """A clip below the smallest normal number of the compute dtype counts as 0.

    Such a clip changes no loss value that the dtype can tell apart, except through
    ``log(q + clip)`` with ``q`` underflowing, where the softplus form (clip 0) is the
    meaningful one.
    """
    return clip < torch.finfo(dtype).tiny


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if not dtype.is_floating_point:
        raise TypeError(f"logits must be a floating point tensor, got {dtype}")
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare_mask(mask: Tensor | None, logits: Tensor, device: torch.device) -> Tensor | None:
    """The boolean mask broadcast to the logits' shape on their device; wrong masks fail loudly."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got {mask.dtype}")
    try:
        return torch.broadcast_to(mask.detach().to(device), logits.shape)
    except RuntimeError as exc:
        shapes = f"{tuple(mask.shape)} -> {tuple(logits.shape)}"
        raise ValueError(f"mask does not broadcast to the logits: {shapes}") from exc


def _prepare_weight(weight: Tensor | None, logits: Tensor, x: Tensor) -> Tensor | None:
    """Per-class weights as constants in the compute dtype and device of `x`."""
    if weight is None:
        return None
    if weight.dim() != 1 or logits.dim() == 0 or weight.shape[0] != logits.shape[-1]:
        raise ValueError(f"weight must be 1-D with one entry per class, got {tuple(weight.shape)}")
    return weight.detach().to(device=x.device, dtype=x.dtype)


def _kernel_config(
    params: dict[str, float],
    x: Tensor,
    *,
    detach_focal_weight: bool,
    need_grad: bool,
    reduction: str,
    has_mask: bool,
    has_weight: bool,
) -> KernelConfig:
    """The static facts the kernel specialises on (each distinct config is one compiled graph)."""
    clip = float(params["clip"])
    return KernelConfig(
        dtype=x.dtype,
        gamma_pos_int=integer_exponent(float(params["gamma_pos"])),
        gamma_neg_int=integer_exponent(float(params["gamma_neg"])),
        same_gamma=float(params["gamma_pos"]) == float(params["gamma_neg"]),
        clip_zero=_negligible_clip(clip, x.dtype),
        small_clip=clip < SMALL_CLIP,
        detach_focal_weight=bool(detach_focal_weight),
        need_grad=need_grad,
        reduction=reduction,
        has_mask=has_mask,
        has_weight=has_weight,
        hard_targets=x.device.type == "cpu",
    )


def asymmetric_polynomial_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha1: float,
    alpha2: float,
    beta: float,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    detach_focal_weight: bool = True,
    reduction: str = "sum",
    weight: Tensor | None = None,
    mask: Tensor | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """The APL loss of ``logits`` against ``targets`` in [0, 1] (same shape).

    Per element, with ``p = sigmoid(x)`` and ``p_m = max(p - clip, 0)``::

        L_pos = (1-p)^gamma_pos * (-log p - (1-alpha1)(1-p) - (0.5-alpha2)(1-p)^2)
        L_neg = p_m^gamma_neg * (-log(1-p_m) - (beta-1)(1-p_m))
        L     = y L_pos + (1-y) L_neg            (hard targets)

    Soft targets mix as the official codes do: one weight ``(1-pt)^g`` with
    ``g = gamma_pos*y + gamma_neg*(1-y)`` and ``1-pt = y(1-p) + (1-y) p_m`` multiplies
    ``y * inner_pos + (1-y) * inner_neg``; for 0/1 targets that is the formula above.

    ``detach_focal_weight`` (default, as in the papers) treats the focusing weight as a
    constant in backward; without it the weight is differentiated too, and where
    ``1-pt`` is exactly 0 its derivative is taken as 0 (finite even for exponents < 1).

    Unknown labels: an element whose target is negative or NaN (for example -1 for
    "not annotated"), or where the optional boolean ``mask`` (broadcastable to
    ``logits``) is False, contributes zero loss and zero gradient.

    ``weight``: optional 1-D tensor of C per-class weights, broadcast along the last
    dimension (the columns of an N x C batch); each element's loss and gradient is
    multiplied by its class weight. Weights are constants (no gradient).

    Reductions: ``sum``; ``mean`` = that sum divided by the number of *known*
    elements (all elements when nothing is masked; class weights do not change the
    count; 0 when every element is unknown); ``none`` = elementwise losses, zeros at
    unknown elements.

    A ``clip`` below the smallest normal number of the compute dtype counts as 0.

    float16/bfloat16 logits are computed in float32 and the result is float32;
    float64 stays float64. Targets receive no gradient. The caller's grad mode is
    never changed. ``backend``: "auto" compiles the fused kernel with torch.compile
    for inputs of at least ``COMPILE_MIN_NUMEL`` elements, "compiled" always tries
    to, "eager" never does; a failing compile falls back to eager with a warning.
    """
    params = {
        "alpha1": alpha1,
        "alpha2": alpha2,
        "beta": beta,
        "gamma_pos": gamma_pos,
        "gamma_neg": gamma_neg,
        "clip": clip,
    }
    _check_parameters(params, reduction)
    if targets.shape != logits.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    dtype = _compute_dtype(logits.dtype)
    x = logits.to(dtype)
    y = targets.detach().to(device=x.device, dtype=dtype)
    mask = _prepare_mask(mask, logits, x.device)
    weight = _prepare_weight(weight, logits, x)
    theta = _theta(tuple(float(v) for v in params.values()), dtype, x.device)
    need_grad = torch.is_grad_enabled() and x.requires_grad
    config = _kernel_config(
        params,
        x,
        detach_focal_weight=detach_focal_weight,
        need_grad=need_grad,
        reduction=reduction,
        has_mask=mask is not None,
        has_weight=weight is not None,
    )
    # Flat (or rows x classes with weights) so a compiled kernel sees one dynamic size,
    # not one per dimension: a batch of one row then needs no recompilation.
    flat = (-1,) if weight is None else (-1, logits.shape[-1])
    x, y = x.reshape(flat), y.reshape(flat)
    mask = None if mask is None else mask.reshape(flat)
    if need_grad:
        loss: Tensor = FusedLoss.apply(x, y, mask, weight, theta, config, backend)
    else:
        loss, _, _ = run_kernel(config, backend, x, y, mask, weight, theta)
    return loss.reshape(logits.shape) if reduction == "none" else loss
