"""The fused elementwise body of the loss: value and closed-form gradient in one pass.

One function computes both, so that under ``torch.compile`` the whole loss (and its
reduction) becomes a single loop over the input; the same function runs eagerly as
the fallback, which keeps the compiled and the eager paths one definition.

Numerics (see docs/losses.md): ``p`` and ``q = 1 - p`` come from one
``exp(-|x|)``, ``-log p`` and ``-log q`` are softplus forms, never a clamped log.
``-log p - q`` (the part of the positive series from the square on) is summed as a
short power series where ``q`` is small, because the direct difference cancels there
(relative error ``eps / q``), and the gradient of the positive term is written as
``-q (alpha1 + q (c1 - 2 c2 p))`` so that no ``p - 1`` appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Largest integer focusing exponent that is expanded into repeated products.
MAX_INTEGER_EXPONENT = 16

#: Below this clip, ``1 - p_m`` for a confident negative (``p_m`` near 1) is taken from
#: ``q + clip`` instead of ``1 - p_m``, whose rounding would cost ``eps / clip`` relative
#: (and give ``log(0)`` once ``clip`` is below an ulp of 1).
SMALL_CLIP = 1.0 / 64


Params = tuple[Tensor | float, ...]  # alpha1, alpha2, beta, gamma_pos, gamma_neg, clip


@dataclass(frozen=True)
class KernelConfig:
    """Everything about a call that changes the traced code (not the parameter values).

    Parameter values travel as a tensor (``theta``) so that a new value never
    recompiles; only integer exponents are baked in, as repeated products.
    ``hard_targets`` selects the path that assumes 0/1 targets (one log and no ``pow``
    per element); it also counts the targets that are not 0/1 so the caller can redo
    the call on the general path, which implements the official soft-target mixing.
    """

    dtype: torch.dtype
    gamma_pos_int: int | None
    gamma_neg_int: int | None
    same_gamma: bool
    clip_zero: bool
    small_clip: bool
    detach_focal_weight: bool
    need_grad: bool
    reduction: str
    has_mask: bool
    has_weight: bool
    hard_targets: bool


def integer_exponent(value: float) -> int | None:
    """The exponent as an int when it is a small whole number, else None."""
    if value.is_integer() and 0 <= value <= MAX_INTEGER_EXPONENT:
        return int(value)
    return None


def _select(cond: Tensor, a: Tensor | float, b: Tensor | float, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.where(cond, a, b)`` for FINITE ``a`` and ``b``.

    Compiled, it is ``torch.where`` (a blend instruction). Eagerly, the CPU ``where``
    kernel costs as much as twenty additions, so it is ``a*m + b*(1-m)`` with a 0/1
    mask ``m``: exact for finite values (x*1 + y*0 == x), wrong for inf or NaN ones,
    which is why callers use it only where both sides are finite by construction.
    ``dtype`` is needed when both ``a`` and ``b`` are numbers.
    """
    if torch.compiler.is_compiling():
        return torch.where(cond, a, b)
    if isinstance(a, Tensor):
        dtype = a.dtype
    elif isinstance(b, Tensor):
        dtype = b.dtype
    assert dtype is not None, "two numbers need the dtype"
    m = cond.to(dtype)
    if isinstance(b, float) and b == 0.0:
        return a * m
    if isinstance(a, float) and a == 0.0:
        return b * (1.0 - m)
    return a * m + b * (1.0 - m)


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 (without dividing by zero eagerly)."""
    positive = den > 0
    if torch.compiler.is_compiling():
        return torch.where(positive, num / den, 0.0)
    m = positive.to(den.dtype)
    return num / (den + (1.0 - m)) * m


def _int_pow(base: Tensor, exponent: int) -> Tensor | None:
    """``base ** exponent`` by repeated squaring; None stands for the constant 1 (0 ** 0 == 1)."""
    if exponent == 0:
        return None
    result: Tensor | None = None
    power = base
    while True:
        if exponent & 1:
            result = power if result is None else result * power
        exponent >>= 1
        if not exponent:
            return result
        power = power * power


def _log(w: Tensor) -> Tensor:
    """Natural log of positive normal numbers.

    Compiled float32 kernels use the Cephes ``logf`` algorithm (about 1.4 ulp) written
    as plain tensor arithmetic: inlined into the loop it is about 10% faster than the
    vectorized library call, which forces every live vector register to be spilled
    around it. Elsewhere ``torch.log``.
    """
    if w.dtype != torch.float32 or not torch.compiler.is_compiling():
        return torch.log(w)
    # Constants are literals on purpose: dynamo turns module-level floats into graph
    # inputs, each converted to a tensor on every call.
    coefficients = (  # Cephes logf: log(1 + m) - m + m^2/2 on [sqrt(1/2) - 1, sqrt(2) - 1]
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
    bits = w.view(torch.int32)
    exponent = (bits >> 23) - 126  # w = m * 2**exponent with m in [0.5, 1)
    m = ((bits & 0x007FFFFF) | 0x3F000000).view(torch.float32)
    small = m < 0.70710678118654752440
    k = torch.where(small, exponent - 1, exponent).to(torch.float32)
    m = torch.where(small, m + m, m) - 1.0
    z = m * m
    poly = torch.full_like(m, coefficients[0])
    for coefficient in coefficients[1:]:
        poly = poly * m + coefficient
    tail = poly * m * z - 2.12194440e-4 * k - 0.5 * z
    return m + tail + 0.693359375 * k


def _log1p(a: Tensor, inv_w: Tensor) -> Tensor:
    """log(1 + a) for -1 < a <= 1 to about an ulp, from ``log`` and a reciprocal the caller holds.

    The vectorized CPU ``log1p`` costs several times a ``log``. ``w = fl(1 + a)`` misses
    ``d = (1 + a) - w``, which Fast2Sum gives exactly as ``a - (w - 1)``, and
    ``log(1 + a) = log(w) + d / w`` up to ``d^2``. ``inv_w`` is ``1 / w`` or a value within a
    few ulps of it (``d`` is below an ulp of ``w``, so that does not matter): the kernel has
    ``1 / (1 + e)`` and ``1 / (1 - p_m)`` at hand anyway, so this costs no division.
    """
    w = 1.0 + a
    return _log(w) + (a - (w - 1.0)) * inv_w


def _log_one_minus(pm: Tensor, r: Tensor, r_inv: Tensor, small_clip: bool) -> Tensor:
    """log(1 - p_m): from p_m where it is small, from r = q + clip where p_m is near 1.

    The selection happens before the log, so no lane ever holds log(0).
    """
    a = -pm
    w = 1.0 + a
    delta = a - (w - 1.0)  # exact rounding error of w (Fast2Sum), see _log1p
    if small_clip:
        far = pm > 0.5
        w = _select(far, r, w)
        delta = _select(far, 0.0, delta)
    return _log(w) + delta * r_inv


def _log1pmx_neg(q: Tensor, nlp: Tensor, dtype: torch.dtype) -> Tensor:
    """``-log(1 - q) - q = sum_{j>=2} q^j / j`` without cancellation for small ``q``.

    Below the threshold the truncated series is exact to the dtype's precision, above it
    the direct difference loses at most ``2 eps / threshold`` relative.
    """
    threshold, terms = (0.05, 6) if dtype == torch.float32 else (0.01, 9)
    series = torch.full_like(q, 1.0 / (terms + 1))
    for j in range(terms, 1, -1):
        series = series * q + 1.0 / j
    series = series * q * q
    return _select(q < threshold, series, nlp - q)


def loss_and_grad(
    x: Tensor,
    y: Tensor,
    mask: Tensor | None,
    weight: Tensor | None,
    theta: Tensor,
    config: KernelConfig,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss (reduced as configured), elementwise gradient of the summed loss, the mean's scale,
    and (hard-target path only) the number of known targets that are neither 0 nor 1.

    ``theta`` holds ``alpha1, alpha2, beta, gamma_pos, gamma_neg, clip``. The gradient is
    that of the *sum* of the elementwise losses; for ``mean`` the third output is
    ``1 / count`` and the caller multiplies it in during backward.
    """
    known = y >= 0  # also False for NaN: unknown labels
    if mask is not None:
        known = known & mask
    # Eagerly, skip the (slow) selections when every label is known.
    all_known = mask is None and not torch.compiler.is_compiling() and bool(known.all())
    if not all_known:
        y = torch.where(known, y, 0.0)

    # Compiled: tensor elements, so a new value needs no recompilation. Eagerly: numbers,
    # because a 0-d tensor operand sends every elementwise op down a slow broadcast path.
    params: Params = tuple(theta.unbind()) if torch.compiler.is_compiling() else tuple(theta.tolist())

    # +-inf logits become the largest finite ones (same loss in the limit), so that every
    # intermediate stays finite, which the eager selections in _select rely on.
    largest = torch.finfo(x.dtype).max
    x = x.clamp(-largest, largest)
    e = torch.exp(-x.abs())
    inv = 1.0 / (1.0 + e)
    ei = e * inv
    nonneg = x >= 0
    p = _select(nonneg, inv, ei)
    q = _select(nonneg, ei, inv)

    if config.hard_targets:
        loss, grad = _hard(x, y, e, inv, p, q, params, config)
        n_soft: Tensor | None = (y - y * y).abs().amax()  # > 0 iff a target is neither 0 nor 1
    else:
        loss, grad = _general(x, y, e, inv, p, q, params, config)
        n_soft = None

    if weight is not None:
        loss = loss * weight
        grad = None if grad is None else grad * weight
    if not all_known:
        loss = torch.where(known, loss, 0.0)
        grad = None if grad is None else torch.where(known, grad, 0.0)

    scale: Tensor | None = None
    if config.reduction == "sum":
        loss = loss.sum()
    elif config.reduction == "mean":
        count = known.sum(dtype=x.dtype)
        scale = 1.0 / torch.clamp(count, min=1.0)
        loss = loss.sum() * scale
    return loss, grad, scale, n_soft


def _positive_parts(
    x: Tensor, log1p_e: Tensor, p: Tensor, q: Tensor, params: Params, config: KernelConfig
) -> tuple[Tensor, Tensor | None]:
    """Inner positive loss ``-log p - c1 q - c2 q^2`` and its derivative (None if not needed)."""
    alpha1, alpha2 = params[0], params[1]
    c1 = 1.0 - alpha1
    c2 = 0.5 - alpha2
    nlp = log1p_e + torch.relu(-x)  # -log p
    a_pos = _log1pmx_neg(q, nlp, config.dtype) + alpha1 * q - c2 * q * q
    d_pos = -q * (alpha1 + q * (c1 - 2.0 * c2 * p)) if config.need_grad else None
    return a_pos, d_pos


def _hard(
    x: Tensor, y: Tensor, e: Tensor, inv: Tensor, p: Tensor, q: Tensor, params: Params, config: KernelConfig
) -> tuple[Tensor, Tensor | None]:
    """0/1 targets: each element is either positive or negative, so one log serves both.

    Every operation here runs on every element (vector lanes take both branches), so
    selections that a zero focusing weight makes moot are left out.
    """
    beta, gamma_pos, gamma_neg, clip = params[2], params[3], params[4], params[5]
    b = beta - 1.0
    pos = y == 1.0
    pq = p * q
    gp, gn = config.gamma_pos_int, config.gamma_neg_int
    # With gamma_neg > 0 the weight p_m^gamma_neg is 0 wherever p <= clip, so the values
    # computed there for the negative term never reach the result.
    neg_weight_vanishes_below_clip = gn != 0
    if config.clip_zero:
        lg = _log1p(e, inv)
        pm = p
        a_neg = lg + torch.relu(x) - b * q  # -log q - b q
        d_neg = p * (1.0 + b * q)
        du_neg: Tensor = pq
    else:
        above = p > clip
        pm = _select(above, p - clip, 0.0)
        r = q + clip  # 1 - p_m where p > clip, accurate also where p_m is near 1
        if not neg_weight_vanishes_below_clip:
            r = _select(above, r, 1.0)
        r_inv = 1.0 / r
        # log1p(e) for positives, log(1 - p_m) for negatives: one log for both.
        a = _select(pos, e, -pm)
        w = 1.0 + a
        delta = a - (w - 1.0)  # exact rounding error of w (Fast2Sum), see _log1p
        if config.small_clip:
            far = (pm > 0.5) & ~pos
            w = _select(far, r, w)
            delta = _select(far, 0.0, delta)
        lg = _log(w) + delta * _select(pos, inv, r_inv)
        a_neg = -lg - b * r
        d_neg = pq * (r_inv + b)
        du_neg = pq
        if not neg_weight_vanishes_below_clip:
            d_neg = _select(above, d_neg, 0.0)
        if not config.detach_focal_weight:
            du_neg = _select(above, pq, 0.0)
    a_pos, d_pos = _positive_parts(x, lg, p, q, params, config)

    focal: Tensor | float
    if gp is not None and gn is not None:
        if gp == gn:
            powered = None if gp == 0 else _int_pow(_select(pos, q, pm), gp)
            focal = 1.0 if powered is None else powered
        else:
            w_pos, w_neg = _int_pow(q, gp), _int_pow(pm, gn)
            focal = _select(pos, 1.0 if w_pos is None else w_pos, 1.0 if w_neg is None else w_neg)
    else:
        focal = _select(pos, q, pm).pow(_select(pos, gamma_pos, gamma_neg, q.dtype))

    a_sel = _select(pos, a_pos, a_neg)
    loss = focal * a_sel
    if not config.need_grad:
        return loss, None
    assert d_pos is not None
    grad = focal * _select(pos, d_pos, d_neg)
    if not config.detach_focal_weight and not (gp == 0 and gn == 0):
        # d(u^g)/dx = g u^g (du/dx) / u, taken as 0 where u == 0 (finite for g < 1).
        u = _select(pos, q, pm)
        du = _select(pos, -pq, du_neg)
        ratio = _safe_ratio(du, u)
        g = _select(pos, gamma_pos, gamma_neg, q.dtype)
        grad = grad + g * focal * ratio * a_sel
    return loss, grad


def _general(
    x: Tensor, y: Tensor, e: Tensor, inv: Tensor, p: Tensor, q: Tensor, params: Params, config: KernelConfig
) -> tuple[Tensor, Tensor | None]:
    """Any targets in [0, 1], mixed as the official codes do (docs/losses.md)."""
    beta, gamma_pos, gamma_neg, clip = params[2], params[3], params[4], params[5]
    b = beta - 1.0
    ny = 1.0 - y
    l1 = _log1p(e, inv)
    pq = p * q
    a_pos, d_pos = _positive_parts(x, l1, p, q, params, config)
    if config.clip_zero:
        pm = p
        a_neg = l1 + torch.relu(x) - b * q  # -log q - b q
        d_neg = p * (1.0 + b * q) if config.need_grad else None
        active: Tensor | float = 1.0
    else:
        above = p > clip
        pm = _select(above, p - clip, 0.0)
        r = _select(above, q + clip, 1.0)  # 1 - p_m, accurate also where p_m is near 1
        r_inv = 1.0 / r
        a_neg = -_log_one_minus(pm, r, r_inv, config.small_clip) - b * r
        d_neg = _select(above, pq * (r_inv + b), 0.0) if config.need_grad else None
        active = above.to(x.dtype)
    a_mix = y * a_pos + ny * a_neg

    u = y * q + ny * pm  # 1 - pt of the official codes
    exponent: Tensor | None = None  # per-element exponent, only for mixed soft targets
    focal: Tensor | None
    if config.same_gamma:
        focal = _int_pow(u, config.gamma_pos_int) if config.gamma_pos_int is not None else u.pow(gamma_pos)
        has_focus = config.gamma_pos_int != 0
    else:
        exponent = gamma_neg + y * (gamma_pos - gamma_neg)
        focal = u.pow(exponent)
        has_focus = True

    loss = a_mix if focal is None else focal * a_mix
    if not config.need_grad:
        return loss, None
    assert d_pos is not None and d_neg is not None
    d_mix = y * d_pos + ny * d_neg
    grad = d_mix if focal is None else focal * d_mix
    if not config.detach_focal_weight and has_focus and focal is not None:
        du = pq * (ny * active - y)
        ratio = _safe_ratio(du, u)
        g = exponent if exponent is not None else gamma_pos
        grad = grad + g * focal * ratio * a_mix
    return loss, grad
