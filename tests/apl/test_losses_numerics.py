"""The loss against a 50-digit mpmath evaluation of the definition, gradcheck, and extremes.

The acceptance run uses more cases than the public file, so these tests draw random
parameters, targets (hard and soft) and logits (moderate and extreme) and compare
with an independent high-precision reference whose gradient comes from mpmath's
numerical differentiation, not from our closed form.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import mpmath
import pytest
import torch

from apl.losses import asymmetric_polynomial_loss
from apl.spec import LOSS_PRESETS

mp = mpmath.mp

Params = dict[str, float]


def mp_element(x: float, y: float, params: Params, detach: bool) -> tuple[Any, Any]:
    """Loss and d(loss)/dx of one element, from the definition (official soft-target mixing)."""
    a1, a2, beta = (mpmath.mpf(params[k]) for k in ("alpha1", "alpha2", "beta"))
    gp, gn, clip = (mpmath.mpf(params[k]) for k in ("gamma_pos", "gamma_neg", "clip"))
    ym = mpmath.mpf(y)

    def pieces(t: Any) -> tuple[Any, Any]:
        p = 1 / (1 + mpmath.exp(-t))
        q = 1 / (1 + mpmath.exp(t))
        pm = p - clip if p > clip else mpmath.mpf(0)
        r = q + clip if p > clip else mpmath.mpf(1)  # 1 - p_m, without cancellation
        minus_log_p = mpmath.log1p(mpmath.exp(-t))  # no cancellation for p near 1
        inner_pos = minus_log_p - (1 - a1) * q - (mpmath.mpf("0.5") - a2) * q**2
        inner_neg = -mpmath.log(r) - (beta - 1) * r
        u = ym * q + (1 - ym) * pm
        weight = u ** (gp * ym + gn * (1 - ym))  # mpmath: 0 ** 0 == 1
        return weight, ym * inner_pos + (1 - ym) * inner_neg

    with mpmath.workdps(50):
        xm = mpmath.mpf(x)
        weight, inner = pieces(xm)
        if detach:
            grad = weight * mpmath.diff(lambda t: pieces(t)[1], xm)
        else:
            grad = mpmath.diff(lambda t: pieces(t)[0] * pieces(t)[1], xm)
        return weight * inner, grad


def mp_reference(
    logits: torch.Tensor, targets: torch.Tensor, params: Params, detach: bool, reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    values, grads = [], []
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        value, grad = mp_element(x, y, params, detach)
        values.append(value)
        grads.append(grad)
    n = len(values)
    if reduction == "none":
        loss = torch.tensor([float(v) for v in values], dtype=torch.float64).reshape(logits.shape)
    else:
        total = mpmath.fsum(values) / (n if reduction == "mean" else 1)
        loss = torch.tensor(float(total), dtype=torch.float64)
    scale = n if reduction == "mean" else 1
    grad_t = torch.tensor([float(g / scale) for g in grads], dtype=torch.float64).reshape(logits.shape)
    return loss, grad_t


def random_params(rng: random.Random) -> Params:
    gammas = [0.0, 1.0, 2.0, 4.0, 0.5, 1.5, 3.3, rng.uniform(0, 5)]
    return {
        "alpha1": rng.choice([0.0, 1.0, rng.uniform(-1, 2)]),
        "alpha2": rng.choice([0.5, 1.75, rng.uniform(-2, 2)]),
        "beta": rng.choice([1.0, rng.uniform(0, 3)]),
        "gamma_pos": rng.choice(gammas),
        "gamma_neg": rng.choice(gammas),
        "clip": rng.choice([0.0, 0.05, 0.2, rng.uniform(0, 0.6)]),
    }


def away_from_kink(logits: torch.Tensor, clip: float, margin: float = 1e-3) -> torch.Tensor:
    """Move logits whose p lies within margin of clip (where the loss has a kink)."""
    p = torch.sigmoid(logits)
    near = (p - clip).abs() < margin
    return torch.where(near, logits + 0.5, logits)


def random_case(rng: random.Random, shape: tuple[int, int], extreme: bool) -> tuple[Any, ...]:
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    params = random_params(rng)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 4
    if extreme:
        signs = torch.randint(0, 2, shape, generator=gen) * 2 - 1
        big = torch.rand(shape, generator=gen, dtype=torch.float64) * 50 + 12
        logits = torch.where(torch.rand(shape, generator=gen) < 0.4, signs * big, logits)
    logits = away_from_kink(logits, params["clip"])
    if rng.random() < 0.3:
        targets = torch.rand(shape, generator=gen, dtype=torch.float64)
        targets[torch.rand(shape, generator=gen) < 0.3] = 1.0
        targets[torch.rand(shape, generator=gen) < 0.3] = 0.0
    else:
        targets = (torch.rand(shape, generator=gen) < 0.35).double()
    detach = rng.random() < 0.5
    reduction = rng.choice(["sum", "mean", "none"])
    return params, logits, targets, detach, reduction


def ours(
    logits: torch.Tensor, targets: torch.Tensor, params: Params, detach: bool, reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.clone().requires_grad_()
    loss = asymmetric_polynomial_loss(
        x, targets, **params, detach_focal_weight=detach, reduction=reduction, backend="eager"
    )
    loss.sum().backward()
    assert x.grad is not None
    return loss.detach(), x.grad


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=rtol * 1e-4 * scale + 1e-300)


@pytest.mark.parametrize("seed", range(24))
def test_random_cases_match_mpmath_in_float64(seed: int) -> None:
    rng = random.Random(seed)
    params, logits, targets, detach, reduction = random_case(rng, (4, 6), extreme=seed % 3 == 0)
    loss, grad = ours(logits, targets, params, detach, reduction)
    ref_loss, ref_grad = mp_reference(logits, targets, params, detach, reduction)
    assert_matches(loss, ref_loss, 1e-8)
    assert_matches(grad, ref_grad, 1e-8)


@pytest.mark.parametrize("seed", range(100, 112))
def test_random_cases_match_mpmath_in_float32(seed: int) -> None:
    rng = random.Random(seed)
    params, logits, targets, detach, reduction = random_case(rng, (4, 6), extreme=seed % 2 == 0)
    x32 = logits.float()
    loss, grad = ours(x32, targets.float(), params, detach, reduction)
    assert loss.dtype == torch.float32
    ref_loss, ref_grad = mp_reference(x32.double(), targets, params, detach, reduction)
    assert_matches(loss, ref_loss, 1e-4)
    assert_matches(grad, ref_grad, 1e-4)


@pytest.mark.parametrize("name", sorted(LOSS_PRESETS))
def test_presets_elementwise_match_mpmath_over_a_wide_range(name: str) -> None:
    """Per element, not summed: confident positives (1 - p tiny) need the series path."""
    params = LOSS_PRESETS[name]
    logits = away_from_kink(torch.linspace(-60, 60, 49, dtype=torch.float64), params["clip"])
    for y in (0.0, 1.0):
        targets = torch.full_like(logits, y)
        for detach in (True, False):
            loss, grad = ours(logits, targets, params, detach, "none")
            ref_loss, ref_grad = mp_reference(logits, targets, params, detach, "none")
            torch.testing.assert_close(loss, ref_loss, rtol=1e-8, atol=1e-300)
            torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-300)


GRADCHECK_PARAMS: list[Params] = [
    LOSS_PRESETS["apl"],
    LOSS_PRESETS["asl"],
    LOSS_PRESETS["focal"],
    LOSS_PRESETS["bce"],
    {"alpha1": -0.5, "alpha2": 0.0, "beta": 0.5, "gamma_pos": 0.5, "gamma_neg": 0.7, "clip": 0.2},
    {"alpha1": 2.0, "alpha2": -1.0, "beta": 2.0, "gamma_pos": 3.0, "gamma_neg": 1.5, "clip": 0.0},
    {"alpha1": 0.3, "alpha2": 1.0, "beta": 1.3, "gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.1},
]


def gradcheck_inputs(index: int, soft: bool) -> tuple[Params, torch.Tensor, torch.Tensor]:
    params = GRADCHECK_PARAMS[index]
    gen = torch.Generator().manual_seed(index)
    logits = away_from_kink(torch.randn(3, 5, generator=gen, dtype=torch.float64) * 3, params["clip"], 0.02)
    if soft:
        targets = torch.rand(3, 5, generator=gen, dtype=torch.float64)
        targets[0, :2] = torch.tensor([0.0, 1.0])
    else:
        targets = (torch.rand(3, 5, generator=gen) < 0.5).double()
    return params, logits, targets


def run_gradcheck(params: Params, logits: torch.Tensor, targets: torch.Tensor, detach: bool) -> None:
    for reduction in ("sum", "mean", "none"):

        def fn(x: torch.Tensor, reduction: str = reduction) -> torch.Tensor:
            return asymmetric_polynomial_loss(
                x, targets, **params, detach_focal_weight=detach, reduction=reduction, backend="eager"
            )

        check: Callable[..., bool] = torch.autograd.gradcheck
        assert check(fn, (logits.clone().requires_grad_(),), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("index", range(len(GRADCHECK_PARAMS)))
def test_gradcheck_without_detach(index: int, soft: bool) -> None:
    params, logits, targets = gradcheck_inputs(index, soft)
    run_gradcheck(params, logits, targets, detach=False)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("index", range(len(GRADCHECK_PARAMS)))
def test_gradcheck_with_detach_where_the_weight_is_constant(index: int, soft: bool) -> None:
    """With both gammas 0 the weight is 1, so the detached gradient is the true one."""
    params, logits, targets = gradcheck_inputs(index, soft)
    run_gradcheck({**params, "gamma_pos": 0.0, "gamma_neg": 0.0}, logits, targets, detach=True)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("index", range(len(GRADCHECK_PARAMS)))
def test_detached_gradient_is_weight_times_numerical_inner_derivative(index: int, soft: bool) -> None:
    """detach on: d/dx [w(x0) * inner(x)] at x0, with inner's derivative by central differences.

    inner(x) is the loss with both gammas 0 (weight 1); w(x0) = (1 - pt)^g from the definition.
    """
    params, logits, targets = gradcheck_inputs(index, soft)
    _, grad = ours(logits, targets, params, True, "sum")
    flat = {**params, "gamma_pos": 0.0, "gamma_neg": 0.0}
    h = 1e-6
    plus, _ = ours(logits + h, targets, flat, True, "none")
    minus, _ = ours(logits - h, targets, flat, True, "none")
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    p_m = (p - params["clip"]).clamp(min=0)
    u = targets * q + (1 - targets) * p_m
    weight = u ** (params["gamma_pos"] * targets + params["gamma_neg"] * (1 - targets))
    torch.testing.assert_close(grad, weight * (plus - minus) / (2 * h), rtol=1e-6, atol=1e-9)


def test_detach_changes_the_gradient_but_not_the_value() -> None:
    logits = torch.tensor([[-1.0, 0.5, 2.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    params = LOSS_PRESETS["asl"]
    on, grad_on = ours(logits, targets, params, True, "sum")
    off, grad_off = ours(logits, targets, params, False, "sum")
    torch.testing.assert_close(on, off)
    assert not torch.allclose(grad_on, grad_off)


def test_apl_positive_gradient_is_the_hand_formula() -> None:
    logits = torch.linspace(-30, 30, 121, dtype=torch.float64)
    _, grad = ours(logits, torch.ones_like(logits), LOSS_PRESETS["apl"], True, "sum")
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)
    torch.testing.assert_close(grad, -(q**2) * (1 + 2.5 * p), rtol=1e-12, atol=1e-300)
    # detach makes no difference here: gamma_pos = 0 means a constant weight of 1.
    _, grad_off = ours(logits, torch.ones_like(logits), LOSS_PRESETS["apl"], False, "sum")
    torch.testing.assert_close(grad_off, grad, rtol=1e-12, atol=1e-300)


def test_zero_to_the_zero_is_one() -> None:
    """gamma_neg = 0 with an easy negative (p_m = 0): weight 0**0 = 1, loss = -(beta - 1)."""
    params = {**LOSS_PRESETS["apl"], "gamma_neg": 0.0, "beta": 2.0}
    loss, grad = ours(
        torch.tensor([-10.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64), params, False, "sum"
    )
    assert float(loss) == -1.0
    assert float(grad) == 0.0


@pytest.mark.parametrize("gamma_neg", [0.25, 0.5, 0.999])
def test_fractional_gamma_neg_gradient_is_finite_at_and_near_zero_p_m(gamma_neg: float) -> None:
    """d p_m^g / dx is unbounded as p_m -> 0 for g < 1; at p_m == 0 it is taken as 0."""
    clip = 0.05
    params = {**LOSS_PRESETS["apl"], "gamma_neg": gamma_neg, "clip": clip}
    at_clip = float(torch.logit(torch.tensor(clip, dtype=torch.float64)))
    logits = torch.tensor(
        [-8.0, at_clip - 1e-9, at_clip, at_clip + 1e-12, at_clip + 1e-6, 0.0], dtype=torch.float64
    )
    for dtype in (torch.float64, torch.float32):
        x = logits.to(dtype)
        loss, grad = ours(x, torch.zeros_like(x), params, False, "none")
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert grad[0] == 0.0 and loss[0] == 0.0
        assert (grad[4:] > 0).all()


@pytest.mark.parametrize("clip", [1e-3, 1e-6, 1e-10, 1e-20, 1e-30, 1e-39])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_tiny_clips_stay_exact_for_confident_negatives(clip: float, dtype: torch.dtype) -> None:
    """1 - p_m rounds to 0 once clip is below an ulp of 1; the loss must come from q + clip then."""
    params = {**LOSS_PRESETS["asl"], "clip": clip, "beta": 1.5}
    logits = torch.tensor([[-3.0, 0.5, 5.0, 17.0, 30.0, 60.0, 88.0]], dtype=torch.float64).repeat(3, 1)
    targets = torch.tensor([[0.0], [1.0], [0.25]], dtype=torch.float64).expand_as(logits).contiguous()
    rtol = 1e-8 if dtype == torch.float64 else 1e-4
    x = logits.to(dtype)
    for detach in (True, False):
        loss, grad = ours(x, targets.to(dtype), params, detach, "none")
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        effective = params if clip >= torch.finfo(dtype).tiny else {**params, "clip": 0.0}
        ref_loss, ref_grad = mp_reference(x.double(), targets, effective, detach, "none")
        tiny = torch.finfo(dtype).tiny  # below it values are subnormal (or underflow) in the dtype
        torch.testing.assert_close(loss.double(), ref_loss, rtol=rtol, atol=tiny)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=rtol, atol=tiny)


PRESET_VARIANTS = [(name, detach) for name in sorted(LOSS_PRESETS) for detach in (True, False)]


@pytest.mark.parametrize(("name", "detach"), PRESET_VARIANTS)
def test_float32_extremes_are_finite(name: str, detach: bool) -> None:
    params = {**LOSS_PRESETS[name]}
    if name == "apl":
        params["gamma_neg"] = 0.5  # also the fractional exponent
    values = [
        -3.0e38,
        -1e30,
        -1e4,
        -150.0,
        -100.0,
        -88.0,
        -30.0,
        -1e-30,
        0.0,
        30.0,
        88.0,
        100.0,
        150.0,
        1e4,
        3e38,
    ]
    logits = torch.tensor(values, dtype=torch.float32).repeat(3, 1)
    targets = torch.tensor([[0.0], [1.0], [0.7]]).expand_as(logits).contiguous()
    loss, grad = ours(logits, targets, params, detach, "none")
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(grad).all(), grad
    summed, _ = ours(logits[:, 2:-2], targets[:, 2:-2], params, detach, "sum")
    assert torch.isfinite(summed)


@pytest.mark.parametrize("name", sorted(LOSS_PRESETS))
def test_positive_at_minus_100_has_a_finite_nonzero_gradient(name: str) -> None:
    for dtype in (torch.float32, torch.float64):
        loss, grad = ours(
            torch.tensor([-100.0], dtype=dtype), torch.ones(1, dtype=dtype), LOSS_PRESETS[name], True, "sum"
        )
        assert torch.isfinite(loss) and float(loss) == pytest.approx(100.0, rel=0.02)
        assert torch.isfinite(grad).all() and float(grad) < -0.5


def test_infinite_logits_give_the_limit_not_nan() -> None:
    logits = torch.tensor([[float("-inf"), float("inf")]] * 2)
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    for name in LOSS_PRESETS:
        loss, grad = ours(logits, targets, LOSS_PRESETS[name], False, "none")
        assert not torch.isnan(loss).any() and torch.isfinite(grad).all()
        assert loss[0, 1] == 0.0 and loss[1, 0] <= 0.0  # confident and right
        assert loss[0, 0] > 1e30 and loss[1, 1] > 1.0  # confident and wrong (clip bounds a negative)


def test_float64_extremes_are_finite() -> None:
    logits = torch.tensor([-1e300, -800.0, -40.0, 40.0, 800.0, 1e300], dtype=torch.float64).repeat(2, 1)
    targets = torch.tensor([[0.0], [1.0]], dtype=torch.float64).expand_as(logits)
    for name in LOSS_PRESETS:
        for detach in (True, False):
            loss, grad = ours(logits, targets, LOSS_PRESETS[name], detach, "none")
            assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(LOSS_PRESETS))
def test_half_precision_inputs_compute_in_float32(dtype: torch.dtype, name: str) -> None:
    gen = torch.Generator().manual_seed(3)
    logits = (torch.rand(6, 21, generator=gen) * 120 - 60).to(dtype)
    logits[0, :2] = torch.tensor([-60.0, 60.0], dtype=dtype)
    targets = (torch.rand(6, 21, generator=gen) < 0.5).to(dtype)
    for detach in (True, False):
        x = logits.clone().requires_grad_()
        loss = asymmetric_polynomial_loss(x, targets, **LOSS_PRESETS[name], detach_focal_weight=detach)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
        assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()
        x32 = logits.float().requires_grad_()
        expected = asymmetric_polynomial_loss(
            x32, targets.float(), **LOSS_PRESETS[name], detach_focal_weight=detach
        )
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0.0)
        assert x32.grad is not None
        torch.testing.assert_close(x.grad, x32.grad.to(dtype))


def test_grad_mode_is_left_alone() -> None:
    x = torch.randn(4, 5, requires_grad=True)
    y = (torch.rand(4, 5) < 0.5).float()
    params = LOSS_PRESETS["asl"]
    with torch.no_grad():
        out = asymmetric_polynomial_loss(x, y, **params)
        assert not torch.is_grad_enabled()
        assert not out.requires_grad
        with torch.enable_grad():
            inner = asymmetric_polynomial_loss(x, y, **params)
            assert torch.is_grad_enabled()
            assert inner.requires_grad
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    inner.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.inference_mode():
        value = asymmetric_polynomial_loss(x, y, **params)
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(value, out)
    assert torch.is_grad_enabled()
    outside = asymmetric_polynomial_loss(x, y, **params, detach_focal_weight=False)
    assert outside.requires_grad and torch.is_grad_enabled()


def test_no_grad_value_equals_the_training_value() -> None:
    x = torch.randn(5, 7, dtype=torch.float64)
    y = torch.rand(5, 7, dtype=torch.float64)
    with torch.no_grad():
        plain = asymmetric_polynomial_loss(x, y, **LOSS_PRESETS["apl"], reduction="none")
    tracked = asymmetric_polynomial_loss(x.requires_grad_(), y, **LOSS_PRESETS["apl"], reduction="none")
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=0)


def test_targets_get_no_gradient_and_are_not_modified() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.rand(3, 4, requires_grad=True)
    before = y.detach().clone()
    asymmetric_polynomial_loss(x, y, **LOSS_PRESETS["apl"]).backward()
    assert y.grad is None
    torch.testing.assert_close(y.detach(), before, rtol=0, atol=0)


def test_backward_twice_with_retain_graph_accumulates() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = (torch.rand(3, 4) < 0.5).float()
    loss = asymmetric_polynomial_loss(x, y, **LOSS_PRESETS["apl"], reduction="mean")
    loss.backward(retain_graph=True)
    assert x.grad is not None
    first = x.grad.clone()
    loss.backward(retain_graph=True)
    torch.testing.assert_close(x.grad, 2 * first)
    x.grad = None
    (3.0 * loss).backward()
    torch.testing.assert_close(x.grad, 3 * first)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_backward_reuses_no_memory_the_caller_can_still_reach(reduction: str) -> None:
    """Backward hands out the saved gradient only when the graph is not kept."""
    x = torch.randn(4, 6, requires_grad=True)
    y = (torch.rand(4, 6) < 0.5).float()
    loss = asymmetric_polynomial_loss(x, y, **LOSS_PRESETS["asl"], reduction=reduction).sum()
    (expected,) = torch.autograd.grad(loss, x, retain_graph=True)
    loss.backward(retain_graph=True)
    assert x.grad is not None
    torch.testing.assert_close(x.grad, expected)
    x.grad.zero_()  # in place, as optimizer.zero_grad(set_to_none=False) does
    loss.backward(retain_graph=True)
    torch.testing.assert_close(x.grad, expected)
    x.grad.mul_(0.0)
    (2.5 * loss).backward()  # last use: the saved gradient may now be reused
    torch.testing.assert_close(x.grad, 2.5 * expected)
    x.grad = None
    fresh = asymmetric_polynomial_loss(x, y, **LOSS_PRESETS["asl"], reduction=reduction).sum()
    fresh.backward()
    torch.testing.assert_close(x.grad, expected)
