"""The fast bodies of the Distribution-Balanced and Two-way losses: equal to the exact ones where their
flag holds, the exact body where it does not, and gradients that autograd's gradcheck accepts.

The golden file (tests/apl/test_losses_robust.py) holds every path to the official formulas;
these tests say which path a batch takes and that the two agree in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from apl.losses import (
    DistributionBalancedLoss,
    distribution_balanced_loss,
    hill_loss,
    splc_loss,
    two_way_loss,
)
from apl.losses._fusion import run_body
from apl.losses.robust import (
    LabelStatistics,
    _db_body,
    _db_hard_body,
    _two_way_body,
    _two_way_fast_body,
)

DB_VALUES = (0.1, 10.0, 0.2, 2.0, 2.0, 2.0)  # map_alpha, map_beta, map_gamma, neg_scale, gamma, balance
DB_OTHER = (0.2, 5.0, 0.3, 5.0, 1.5, 1.7)  # a whole exponent and a fractional one; 1.7 / 5 is not a float32


def _batch(
    shape: tuple[int, int], seed: int = 0, scale: float = 3.0, share: float = 0.1
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    targets = (torch.rand(shape, generator=gen, dtype=torch.float64) < share).to(torch.float64)
    return logits, targets


def _db_inputs(x: Tensor, y: Tensor, values: tuple[float, ...] = DB_VALUES) -> tuple[Tensor, ...]:
    stats = LabelStatistics(torch.nan_to_num(y).sum(0) + 3.0, 500.0, init_bias=0.05, neg_scale=values[3])
    inv_n, beta_inv_n, bias = stats.like(x, values[1])
    return x, y, inv_n, beta_inv_n, bias


@pytest.mark.parametrize("values", [DB_VALUES, DB_OTHER])
@pytest.mark.parametrize("need_grad", [True, False])
def test_dbl_hard_targets_take_the_fast_body_and_equal_the_exact_one(
    need_grad: bool, values: tuple[float, ...]
) -> None:
    x, y = _batch((40, 30))
    y[:3, :4] = math.nan
    inputs = _db_inputs(x, y, values)
    loss, grad, holds = _db_hard_body(values, "mean", need_grad)(*inputs)
    exact_loss, exact_grad = _db_body(values, "mean", need_grad)(*inputs)
    assert bool(holds)
    assert float(loss) == pytest.approx(float(exact_loss), rel=1e-12)
    if need_grad:
        assert grad is not None and exact_grad is not None
        torch.testing.assert_close(grad, exact_grad, rtol=1e-12, atol=1e-15)
    else:
        assert grad is None


def test_dbl_soft_targets_are_left_to_the_exact_body() -> None:
    x, y = _batch((20, 12))
    y[0, 0] = 0.7  # a soft target: pt is exp(-BCE), not a sigmoid
    inputs = _db_inputs(x, y)
    *_, holds = _db_hard_body(DB_VALUES, "sum", True)(*inputs)
    assert not bool(holds)
    names = ("map_alpha", "map_beta", "map_gamma", "neg_scale", "gamma", "balance")
    params = dict(zip(names, DB_VALUES, strict=True))
    counts = (torch.nan_to_num(y).sum(0) + 3.0).tolist()
    value = distribution_balanced_loss(x, y, label_counts=counts, num_samples=500.0, init_bias=0.05, **params)
    exact, _ = _db_body(DB_VALUES, "sum", True)(*inputs)
    assert float(value) == pytest.approx(float(exact), rel=1e-12)


def test_dbl_module_computes_the_label_statistics_once_per_device_and_dtype() -> None:
    x, y = _batch((8, 5))
    module = DistributionBalancedLoss(label_counts=[3.0, 1.0, 7.0, 2.0, 5.0], num_samples=50)
    first = module.statistics.like(x, 10.0)
    module(x, y)
    assert module.statistics.like(x, 10.0)[0] is first[0]
    assert module.statistics.like(x.float(), 10.0)[0].dtype == torch.float32


def _two_way(
    x: Tensor, y: Tensor, tp: float = 4.0, tn: float = 1.0
) -> tuple[Tensor, Tensor, bool, Tensor, Tensor]:
    loss, grad, holds = _two_way_fast_body(tp, tn, False, True, x.dtype)(x, y)
    exact_loss, exact_grad = _two_way_body(tp, tn, False, True)(x, y)
    assert grad is not None and exact_grad is not None
    return loss, grad, bool(holds), exact_loss, exact_grad


@pytest.mark.parametrize("shape", [(6, 5), (64, 40), (300, 17)])
def test_two_way_fast_body_equals_the_official_masking_where_its_flag_holds(shape: tuple[int, int]) -> None:
    x, y = _batch(shape, seed=shape[0])
    y[0, :] = 0.0  # a row without positives
    y[1, 1] = math.nan
    y[:, 2] = 1.0 if shape[0] < 10 else y[:, 2]  # small batch: a column of positives only (flag off)
    loss, grad, holds, exact_loss, exact_grad = _two_way(x, y)
    assert holds == (shape[0] >= 10)
    if holds:
        assert float(loss) == pytest.approx(float(exact_loss), rel=1e-12)
        torch.testing.assert_close(grad, exact_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("case", "tp", "tn"),
    [
        ("wide logits: the -100 mask is no longer negligible", 4.0, 1.0),
        ("a row of positives only", 4.0, 1.0),
        ("small temperatures: exp(|x| / t) would overflow", 0.1, 0.1),
    ],
)
def test_two_way_falls_back_to_the_exact_body(case: str, tp: float, tn: float) -> None:
    x, y = _batch((30, 20), seed=3)
    if case.startswith("wide"):
        x[0, 0], x[1, 1] = 60.0, -60.0
    elif case.startswith("a row"):
        y[4, :] = 1.0
    *_, holds, _, _ = _two_way(x, y, tp, tn)
    assert not holds
    value = two_way_loss(x, y, tp=tp, tn=tn)
    exact, _ = run_body("test-exact", _two_way_body(tp, tn, False, False), x, y)
    assert float(value) == pytest.approx(float(exact), rel=1e-12)


def test_two_way_float32_fast_body_agrees_with_float64() -> None:
    x, y = _batch((256, 50), seed=5)
    loss32, grad32, holds, _, _ = _two_way(x.float(), y.float())
    loss64, grad64, _, _, _ = _two_way(x, y)
    assert holds
    assert float(loss32) == pytest.approx(float(loss64), rel=1e-5)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["hill", "splc", "dbl", "dbl-soft", "twoway", "twoway-exact"])
def test_gradcheck_float64(name: str) -> None:
    """autograd.gradcheck: the hand-derived gradient against finite differences of the value, every path."""
    x, y = _batch((7, 5), seed=11, scale=2.0, share=0.3)
    y[0, 0], y[3, 2] = 1.0, math.nan
    if name == "dbl-soft":
        y[2, 1] = 0.4
    if name == "twoway-exact":
        y[5, :] = 1.0  # a row of positives only: the exact body
    counts = {"label_counts": [4.0, 2.0, 9.0, 1.0, 6.0], "num_samples": 30}
    functions = {
        "hill": lambda v: hill_loss(v, y, gamma=1.5),
        "splc": lambda v: splc_loss(v, y),
        "dbl": lambda v: distribution_balanced_loss(v, y, **counts),  # type: ignore[arg-type]
        "twoway": lambda v: two_way_loss(v, y),
    }
    fn = functions[name.split("-")[0]]
    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-7, rtol=1e-5)
