"""Losses for under-tagged and long-tailed data: Hill, SPLC, Distribution-Balanced and Two-way.

Each is the formula of its official code (docs/losses.md names the file and the class)
computed stably in float32 (float64 stays float64), with a closed-form gradient fused
into the forward pass (`apl.losses._fusion`). Conventions shared with the APL family:
a target that is NaN or negative is an unknown cell (zero loss and zero gradient), the
caller's grad mode is never changed, and ``reduction`` is ``sum`` (the official codes'
choice and what the training loop uses), ``mean`` (the sum over the known cells divided
by their number) or ``none``. The focusing weights are differentiated, as in the
official codes (none of them detaches it). Distribution-Balanced and Two-way have a fast
body for the usual inputs (0/1 targets; logits in a range where the official -100 mask is
below rounding) that says whether it applies, and the exact body stands in where it does
not (`apl.losses._fusion.Guarded`; docs/losses.md, "Speed"). The golden cases of
tests/apl/data/robust_loss_cases.json hold these functions to reference ports of the
official codes (benchmarks/robust_loss_cases.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from apl.losses._fusion import Body, FastBody, Guarded, fused
from apl.losses._kernel import _int_pow, integer_exponent

REDUCTIONS = ("sum", "mean", "none")

#: What the Two-way loss's official code adds to a logit to leave it out of a log-sum-exp.
TWO_WAY_MASK = -100.0


def _check(params: dict[str, float], reduction: str, reductions: Sequence[str] = REDUCTIONS) -> None:
    for key, value in params.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
    if reduction not in reductions:
        raise ValueError(f"reduction must be one of {tuple(reductions)}, got {reduction!r}")


def _at_least(params: dict[str, float], names: Sequence[str], low: float, strict: bool = False) -> None:
    for name in names:
        value = params[name]
        if value < low or (strict and value == low):
            raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")


def _inputs(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Logits in the compute dtype (float32, or float64 for float64) and detached targets alike."""
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating point tensor, got {logits.dtype}")
    if targets.shape != logits.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype)
    return x, targets.detach().to(device=x.device, dtype=dtype)


def _pow(base: Tensor, exponent: float) -> Tensor | None:
    """``base ** exponent`` (products for small whole exponents); None stands for 1."""
    whole = integer_exponent(exponent)
    if whole is not None:
        return _int_pow(base, whole)
    return base**exponent


def _pow_derivative(base: Tensor, exponent: float, weight: Tensor, d_base: Tensor) -> Tensor:
    """d(base ** exponent) = exponent * base ** (exponent - 1) * d_base, with ``weight = base ** exponent``.

    Whole exponents >= 1 use the power below (no division); others ``weight * d_base / base``,
    0 where the base is 0 (finite for exponents below 1 too).
    """
    whole = integer_exponent(exponent)
    if whole is not None and whole >= 1:
        lower = _int_pow(base, whole - 1)
        return exponent * d_base if lower is None else exponent * lower * d_base
    return exponent * weight * _ratio(d_base, base)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0: the derivative of ``u ** g`` as ``g u**g du/u``."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def _sigmoids(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``sigmoid(x)``, ``sigmoid(-x)`` and ``log(1 + exp(-|x|))`` from one ``exp``.

    ``log sigmoid(x) = min(x, 0) - l`` and ``log sigmoid(-x) = -max(x, 0) - l`` with the
    third value ``l``: every log-sigmoid the losses need, stable for any finite x.
    """
    e = torch.exp(-x.abs())
    r = 1.0 / (1.0 + e)
    er = e * r
    nonneg = x >= 0
    return torch.where(nonneg, r, er), torch.where(nonneg, er, r), torch.log1p(e)


def _reduce(loss: Tensor, grad: Tensor | None, known: Tensor, reduction: str) -> tuple[Tensor, Tensor | None]:
    """Zero at unknown cells, then the reduction (and the gradient of the reduced value).

    Sums go row by row first: compiled, the row sums join the loop over the row that
    computes the loss, where one sum over everything is a second loop that reads back
    every intermediate the first one had to store.
    """
    loss = torch.where(known, loss, 0.0)
    grad = None if grad is None else torch.where(known, grad, 0.0)
    if reduction == "none":
        return loss, grad
    total = loss.sum(-1).sum()
    if reduction == "sum":
        return total, grad
    count = known.sum(-1).sum().clamp(min=1).to(loss.dtype)
    return total / count, None if grad is None else grad / count


def _hill_body(lamb: float, margin: float, gamma: float, reduction: str, need_grad: bool) -> Body:
    def body(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        known = y >= 0
        y = torch.where(known, y, 0.0)
        ny = 1.0 - y
        xm = x - margin
        pp, qq, lm = _sigmoids(xm)  # sigmoid(x - margin) and 1 - it
        pn, qn, _ = _sigmoids(x)
        u = y * qq + ny  # the official pt: (1 - p_margin) on positives, 1 on negatives
        weight = _pow(u, gamma)
        inner = y * (lm - torch.clamp(xm, max=0.0)) + ny * (lamb - pn) * pn * pn
        loss = inner if weight is None else weight * inner
        if not need_grad:
            return _reduce(loss, None, known, reduction)
        d_inner = -y * qq + ny * (2.0 * lamb - 3.0 * pn) * pn * pn * qn
        grad = d_inner if weight is None else weight * d_inner
        if weight is not None:
            grad = grad + _pow_derivative(u, gamma, weight, -y * pp * qq) * inner
        return _reduce(loss, grad, known, reduction)

    return body


def hill_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    lamb: float = 1.5,
    margin: float = 1.0,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Hill (Zhang et al. 2021; xinyu1205/robust-loss-mlml, ``Hill``), per element::

        L = y (1 - sigmoid(x - margin))^gamma (-log sigmoid(x - margin)) + (1 - y) (lamb - p) p^2

    with ``p = sigmoid(x)``: the negative term is small for confident negatives and
    falls again past ``p = 2 lamb / 3``, so a likely missing positive is pushed less.
    """
    params = {"lamb": lamb, "margin": margin, "gamma": gamma}
    _check(params, reduction)
    _at_least(params, ["gamma"], 0.0)
    x, y = _inputs(logits, targets)
    key = ("hill", float(lamb), float(margin), float(gamma), reduction, x.dtype)
    return fused(key, lambda g: _hill_body(float(lamb), float(margin), float(gamma), reduction, g), x, y)


def _splc_body(
    tau: float, margin: float, gamma: float, correct: bool, reduction: str, need_grad: bool
) -> Body:
    def body(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        known = y >= 0
        y = torch.where(known, y, 0.0)
        z = torch.where(y == 1.0, x - margin, x)  # the official code shifts the given positives
        p, q, lz = _sigmoids(z)
        t = torch.where(p > tau, 1.0, y) if correct else y  # a confident negative becomes a positive
        nt = 1.0 - t
        u = t * q + nt * p  # the official pt
        weight = _pow(u, gamma)
        inner = t * (lz - torch.clamp(z, max=0.0)) + nt * (lz + torch.clamp(z, min=0.0))
        loss = inner if weight is None else weight * inner
        if not need_grad:
            return _reduce(loss, None, known, reduction)
        d_inner = nt * p - t * q
        grad = d_inner if weight is None else weight * d_inner
        if weight is not None:
            grad = grad + _pow_derivative(u, gamma, weight, (nt - t) * p * q) * inner
        return _reduce(loss, grad, known, reduction)

    return body


def splc_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.6,
    margin: float = 1.0,
    gamma: float = 2.0,
    correct: bool = True,
    reduction: str = "sum",
) -> Tensor:
    """SPLC (Zhang et al. 2021; xinyu1205/robust-loss-mlml, ``SPLC``): focal margin loss with correction.

    Given positives use ``z = x - margin``, the others ``z = x``; with ``correct`` (the
    official ``epoch >= change_epoch``) an observed negative with ``sigmoid(z) > tau`` is
    taken as a positive. Then ``L = u^gamma * BCE(z, t)`` with ``u = 1 - p_t``.
    """
    params = {"tau": tau, "margin": margin, "gamma": gamma}
    _check(params, reduction)
    _at_least(params, ["gamma"], 0.0)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau!r}")
    x, y = _inputs(logits, targets)
    t, m, g, c = float(tau), float(margin), float(gamma), bool(correct)
    key = ("splc", t, m, g, c, reduction, x.dtype)
    return fused(key, lambda need: _splc_body(t, m, g, c, reduction, need), x, y)


def _db_body(values: tuple[float, ...], reduction: str, need_grad: bool) -> Body:
    """Any targets in [0, 1] (soft ones too): ``1 - pt`` from ``exp(-BCE)`` as the official code."""
    map_alpha, map_beta, map_gamma, neg_scale, gamma, balance = values

    def body(
        x: Tensor, y: Tensor, inv_n: Tensor, _beta_inv_n: Tensor, bias: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        known = y >= 0
        y = torch.where(known, y, 0.0)
        ny = 1.0 - y
        repeat = (y * inv_n).sum(dim=-1, keepdim=True)  # r_i = sum_c y_ic / n_c
        ratio = inv_n * (1.0 / torch.where(repeat > 0, repeat, 1.0))  # one division per row
        mapped = torch.where(repeat > 0, torch.sigmoid(map_beta * (ratio - map_gamma)), 1.0)
        k = ny * neg_scale + y  # negative-tolerant regularization: negatives' logits scaled
        w = (map_alpha + mapped) * (ny / neg_scale + y)
        z = (x + bias) * k
        p, _, lz = _sigmoids(z)
        bce = lz + torch.clamp(z, min=0.0) - y * z  # BCE-with-logits, stable for both signs
        one_minus_pt = -torch.expm1(-bce)
        focus = _pow(one_minus_pt, gamma)
        scale = balance * w
        loss = scale * bce if focus is None else scale * focus * bce
        if not need_grad:
            return _reduce(loss, None, known, reduction)
        d_bce = (p - y) * k
        if focus is None:
            return _reduce(loss, scale * d_bce, known, reduction)
        # d(1 - pt)/d bce = pt: d[(1 - pt)^gamma bce] = gamma (1 - pt)^(gamma - 1) pt bce + (1 - pt)^gamma
        d_focus_bce = _pow_derivative(one_minus_pt, gamma, focus, 1.0 - one_minus_pt) * bce + focus
        return _reduce(loss, scale * d_focus_bce * d_bce, known, reduction)

    return body


def _db_hard_body(values: tuple[float, ...], reduction: str, need_grad: bool) -> FastBody:
    """0/1 targets (the flag says whether they are): the same loss with two fewer transcendentals.

    With a hard target ``pt`` is ``sigmoid(z)`` or ``sigmoid(-z)``, so ``1 - pt`` is the
    other sigmoid, which the logit's one ``exp`` already gave (no ``expm1(-BCE)``), and
    every product with ``y`` or ``1 - y`` becomes a select. ``beta_inv_n`` is
    ``map_beta / n_c``, computed once per loss.
    """
    map_alpha, _, map_gamma, neg_scale, gamma, balance = values
    shift = values[1] * map_gamma

    def body(
        x: Tensor, y: Tensor, inv_n: Tensor, beta_inv_n: Tensor, bias: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        known = y >= 0
        pos = y == 1.0
        hard = ~(known & ~pos & (y != 0.0)).any(-1).any()
        repeat = torch.where(pos, inv_n, 0.0).sum(dim=-1, keepdim=True)  # r_i = sum_c y_ic / n_c
        has = repeat > 0
        inv_r = 1.0 / torch.where(has, repeat, 1.0)
        mapped = torch.where(has, torch.sigmoid(beta_inv_n * inv_r - shift), 1.0)
        weight = map_alpha + mapped
        scale = torch.where(pos, weight * balance, weight * (balance / neg_scale))
        z = torch.where(pos, x + bias, (x + bias) * neg_scale)
        p, q, lz = _sigmoids(z)
        bce = lz + torch.where(pos, -torch.clamp(z, max=0.0), torch.clamp(z, min=0.0))
        one_minus_pt = torch.where(pos, q, p)
        focus = _pow(one_minus_pt, gamma)
        loss = scale * bce if focus is None else scale * focus * bce
        if not need_grad:
            return (*_reduce(loss, None, known, reduction), hard)
        d_bce = torch.where(pos, -q, p * neg_scale)
        if focus is not None:
            d_bce = d_bce * (_pow_derivative(one_minus_pt, gamma, focus, 1.0 - one_minus_pt) * bce + focus)
        return (*_reduce(loss, scale * d_bce, known, reduction), hard)

    return body


class LabelStatistics:
    """What the Distribution-Balanced loss takes from the training split, computed once.

    ``1 / n_c`` and the prior logit bias ``-init_bias * log(N / n_c - 1) / neg_scale`` in
    float64, and their copies per device and dtype (a loss module keeps one of these, so
    a training step converts nothing). Counts are clamped to [1, N - 1]: outside it the
    official formulas divide by zero or take the log of 0 (a label never or always
    positive in the training split).
    """

    def __init__(
        self,
        label_counts: Sequence[float] | Tensor,
        num_samples: float,
        *,
        init_bias: float,
        neg_scale: float,
    ) -> None:
        if isinstance(num_samples, bool) or not math.isfinite(num_samples) or num_samples < 2:
            raise ValueError(f"num_samples must be a number >= 2, got {num_samples!r}")
        _check({"init_bias": init_bias, "neg_scale": neg_scale}, "sum")
        _at_least({"neg_scale": neg_scale}, ["neg_scale"], 0.0, strict=True)
        counts = torch.as_tensor(label_counts, dtype=torch.float64).detach().cpu()
        if counts.dim() != 1:
            raise ValueError(f"label_counts must hold one count per class, got shape {tuple(counts.shape)}")
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
            raise ValueError("label_counts must be finite and >= 0")
        counts = counts.clamp(min=1.0, max=float(num_samples) - 1.0)
        self.classes = int(counts.shape[0])
        self.inv_n = 1.0 / counts
        self.bias = -init_bias * torch.log(float(num_samples) / counts - 1.0) / neg_scale
        self._copies: dict[tuple[torch.device, torch.dtype, float], tuple[Tensor, Tensor, Tensor]] = {}

    def like(self, x: Tensor, map_beta: float) -> tuple[Tensor, Tensor, Tensor]:
        """``1 / n_c``, ``map_beta / n_c`` and the bias on x's device, in x's dtype."""
        classes = x.shape[-1] if x.dim() else 0
        if classes != self.classes:
            raise ValueError(f"label_counts must hold one count per class ({classes}), got ({self.classes},)")
        key = (x.device, x.dtype, map_beta)
        copies = self._copies.get(key)
        if copies is None:
            inv_n, bias = (t.to(device=x.device, dtype=x.dtype) for t in (self.inv_n, self.bias))
            copies = (inv_n, map_beta * inv_n, bias)
            self._copies[key] = copies
        return copies


def _db_values(params: dict[str, float], reduction: str) -> tuple[float, ...]:
    _check(params, reduction)
    _at_least(params, ["gamma", "map_alpha", "balance"], 0.0)
    _at_least(params, ["neg_scale"], 0.0, strict=True)
    names = ("map_alpha", "map_beta", "map_gamma", "neg_scale", "gamma", "balance")
    return tuple(float(params[name]) for name in names)


def db_loss_with(
    logits: Tensor, targets: Tensor, statistics: LabelStatistics, params: dict[str, float], reduction: str
) -> Tensor:
    """The Distribution-Balanced loss with the training split's statistics already computed."""
    values = _db_values(params, reduction)
    x, y = _inputs(logits, targets)
    inv_n, beta_inv_n, bias = statistics.like(x, values[1])
    key = ("dbl", values, reduction, x.dtype)

    def make(need: bool) -> Guarded:
        return Guarded(_db_hard_body(values, reduction, need), _db_body(values, reduction, need))

    return fused(key, make, x, y, inv_n, beta_inv_n, bias)


def distribution_balanced_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    label_counts: Sequence[float] | Tensor,
    num_samples: float,
    map_alpha: float = 0.1,
    map_beta: float = 10.0,
    map_gamma: float = 0.2,
    init_bias: float = 0.05,
    neg_scale: float = 2.0,
    gamma: float = 2.0,
    balance: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Distribution-Balanced loss (Wu et al. ECCV 2020; wutong16/DistributionBalancedLoss ``ResampleLoss``).

    The DB-Focal setting: rebalanced weights ``w = map_alpha + sigmoid(map_beta * ((1/n_c) /
    r_i - map_gamma))`` with ``r_i = sum_c y_ic / n_c``; logits shifted by the prior bias
    ``b_c`` and, on negatives, scaled by ``neg_scale`` (weight divided by it); then
    ``balance * (1 - pt)^gamma * w * BCE`` (docs/losses.md). ``label_counts`` are the known
    positives per label and ``num_samples`` the number of samples of the training split
    (`DistributionBalancedLoss` computes what depends on them once, not every call).
    """
    params = {
        "map_alpha": map_alpha,
        "map_beta": map_beta,
        "map_gamma": map_gamma,
        "init_bias": init_bias,
        "neg_scale": neg_scale,
        "gamma": gamma,
        "balance": balance,
    }
    _db_values(params, reduction)
    statistics = LabelStatistics(
        label_counts, float(num_samples), init_bias=float(init_bias), neg_scale=float(neg_scale)
    )
    return db_loss_with(logits, targets, statistics, params, reduction)


def _softplus_slope(s: Tensor) -> Tensor:
    """The derivative of ``F.softplus`` as its backward gives it: 1 past the threshold of 20, where
    the value is ``s`` itself (the official code's softplus), else ``sigmoid(s)``."""
    return torch.where(s > 20.0, 1.0, torch.sigmoid(s))


def _two_way_body(tp: float, tn: float, per_row: bool, need_grad: bool) -> Body:
    def body(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        pos, neg = y > 0, y == 0  # NaN and negative targets are in neither
        a = -x / tp + torch.where(pos, 0.0, TWO_WAY_MASK)
        b = x / tn + torch.where(neg, 0.0, TWO_WAY_MASK)
        lp_c, ln_c = torch.logsumexp(a, dim=0), torch.logsumexp(b, dim=0)
        lp_s, ln_s = torch.logsumexp(a, dim=1, keepdim=True), torch.logsumexp(b, dim=1, keepdim=True)
        has_c, has_s = pos.any(dim=0), pos.any(dim=1, keepdim=True)
        n_c = has_c.sum().clamp(min=1).to(x.dtype)
        n_s = has_s.sum().clamp(min=1).to(x.dtype)
        s_c, s_s = tn * ln_c + tp * lp_c, tn * ln_s + tp * lp_s
        scale = float(x.shape[0]) if per_row else 1.0
        loss_c = torch.where(has_c, F.softplus(s_c), 0.0).sum() / n_c
        loss_s = torch.where(has_s, F.softplus(s_s), 0.0).sum() / n_s
        loss = (loss_c + loss_s) * scale
        if not need_grad:
            return loss, None
        g_c = torch.where(has_c, _softplus_slope(s_c), 0.0) * (scale / n_c)
        g_s = torch.where(has_s, _softplus_slope(s_s), 0.0) * (scale / n_s)
        grad = g_c * (torch.exp(b - ln_c) - torch.exp(a - lp_c))
        grad = grad + g_s * (torch.exp(b - ln_s) - torch.exp(a - lp_s))
        # An unknown cell's share, through the -100 mask, is below exp(-80) of the rest: made 0.
        return loss, torch.where(y >= 0, grad, 0.0)

    return body


#: How far below the kept terms (as a power of e) a dropped -100-masked term must be, per dtype:
#: e^-24 is 1e-11 (float32's rounding is 6e-8), e^-40 is 4e-18 (float64's is 1e-16).
_TWO_WAY_DROP = {torch.float32: 24.0, torch.float64: 40.0}
#: The largest |logit| / temperature + log(terms) whose exp sums stay normal floats, per dtype.
_TWO_WAY_EXP = {torch.float32: 80.0, torch.float64: 700.0}


def _two_way_fast_body(tp: float, tn: float, per_row: bool, need_grad: bool, dtype: torch.dtype) -> FastBody:
    """The Two-way loss from one ``exp`` per cell and no max pass; the flag says where that is exact.

    Each cell enters one log-sum-exp family only: ``-x/tp`` where it is a positive, ``x/tn``
    where it is a negative. The official code also adds every other cell there with
    -100 added; those terms are dropped here, which changes nothing in the dtype's
    precision as long as ``(max x - min x)(1/tp + 1/tn) + log(max(N, C))`` stays
    ``_TWO_WAY_DROP`` below 100, and each row and column with a positive also has a
    negative. The sums are taken without a shift, so ``max|x| / min(tp, tn) + log(max(N, C))``
    must also stay below ``_TWO_WAY_EXP`` (no overflow, no denormal terms). Then the
    gradient is ``exp(v)`` times a per-row and a per-column factor. Otherwise the flag
    is false and the exact body (`_two_way_body`) runs.
    """
    drop, limit = 100.0 - _TWO_WAY_DROP[dtype], _TWO_WAY_EXP[dtype]

    def body(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        pos, neg = y > 0, y == 0
        e = torch.where(pos | neg, torch.exp(torch.where(pos, x * (-1.0 / tp), x * (1.0 / tn))), 0.0)
        ep, en = torch.where(pos, e, 0.0), torch.where(neg, e, 0.0)
        sp_c, sn_c, sp_s, sn_s = ep.sum(0), en.sum(0), ep.sum(1, keepdim=True), en.sum(1, keepdim=True)
        has_c, has_s = sp_c > 0, sp_s > 0
        low, high = x.min(), x.max()
        # log(max(N, C)) as a tensor: a Python log of the shape would pin the compiled body to it
        one = x.new_ones(())
        terms = torch.log(torch.maximum(one * x.shape[0], one * x.shape[1]))
        holds = (
            (torch.maximum(high, -low) * max(1.0 / tp, 1.0 / tn) + terms <= limit)
            & ((high - low) * (1.0 / tp + 1.0 / tn) + terms <= drop)
            & ~(has_c & (sn_c == 0)).any()
            & ~(has_s & (sn_s == 0)).any()
        )
        on_c, on_s = has_c.to(x.dtype), has_s.to(x.dtype)
        sp_c, sn_c = torch.where(has_c, sp_c, 1.0), torch.where(has_c, sn_c, 1.0)
        sp_s, sn_s = torch.where(has_s, sp_s, 1.0), torch.where(has_s, sn_s, 1.0)
        s_c = tn * torch.log(sn_c) + tp * torch.log(sp_c)
        s_s = tn * torch.log(sn_s) + tp * torch.log(sp_s)
        scale = float(x.shape[0]) if per_row else 1.0
        n_c, n_s = on_c.sum().clamp(min=1.0), on_s.sum().clamp(min=1.0)
        loss = ((on_c * F.softplus(s_c)).sum() / n_c + (on_s * F.softplus(s_s)).sum() / n_s) * scale
        if not need_grad:
            return loss, None, holds
        g_c = on_c * _softplus_slope(s_c) * (scale / n_c)
        g_s = on_s * _softplus_slope(s_s) * (scale / n_s)
        factor = torch.where(pos, -(g_c / sp_c) - g_s / sp_s, g_c / sn_c + g_s / sn_s)
        return loss, e * factor, holds

    return body


def two_way_loss(
    logits: Tensor, targets: Tensor, *, tp: float = 4.0, tn: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Two-way loss (Kobayashi CVPR 2023; tk1980/TwowayMultiLabelLoss ``TwoWayLoss``) of an N x C batch.

    ``softplus(tn * LSE_neg(x / tn) + tp * LSE_pos(-x / tp))`` over the samples of each
    label that has a positive in the batch (averaged over those labels), plus the same
    over the labels of each sample that has a positive (averaged over those samples).
    ``mean`` is that value, as the official code returns it; ``sum`` is it times N, so
    that the training loop's division of the summed loss by the batch size gives it back.
    A batch without any positive has loss 0 (the official code gives NaN there).
    """
    params = {"tp": tp, "tn": tn}
    _check(params, reduction, ("sum", "mean"))
    _at_least(params, ["tp", "tn"], 0.0, strict=True)
    x, y = _inputs(logits, targets)
    if x.dim() != 2:
        raise ValueError(f"the two-way loss needs N x C logits, got shape {tuple(x.shape)}")
    key = ("twoway", float(tp), float(tn), reduction, x.dtype)
    per_row, t_p, t_n = reduction == "sum", float(tp), float(tn)

    def make(need: bool) -> Guarded:
        fast = _two_way_fast_body(t_p, t_n, per_row, need, x.dtype)
        return Guarded(fast, _two_way_body(t_p, t_n, per_row, need))

    return fused(key, make, x, y)
