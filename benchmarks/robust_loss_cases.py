"""Writes tests/apl/data/robust_loss_cases.json: golden values and gradients of Hill, SPLC, DBL, Two-way.

Usage: .venv/bin/python benchmarks/robust_loss_cases.py [--out tests/apl/data/robust_loss_cases.json]

Each value comes from a small reference port of the loss's official code, written here
line by line after it and differentiated by autograd in float64 (no closed forms, none
of `apl.losses`' code), so the suite (tests/apl/test_losses_robust.py) checks the fused
losses against the official formulas, not against themselves:

- Hill and SPLC: xinyu1205/robust-loss-mlml, src/loss_functions/losses.py, classes
  ``Hill`` (lamb=1.5, margin=1, gamma=2, reduction 'sum') and ``SPLC`` (tau=0.6,
  change_epoch=1, margin=1, gamma=2, reduction 'sum').
- Distribution-Balanced: wutong16/DistributionBalancedLoss, mllt/models/losses/
  resample_loss.py, ``ResampleLoss`` with reweight_func='rebalance', focal on, logit_reg
  on, the DB-Focal config (configs/coco/LT_resnet50_pfc_DB.py) as defaults, reduction
  'none' (the focal path's) summed here.
- Two-way: tk1980/TwowayMultiLabelLoss, ``TwoWayLoss`` (Tp=4, Tn=1, nINF=-100; the same
  class is in mmpretrain).

Unknown cells (NaN in `targets`) are not in the official codes except Two-way's (any
target that is neither > 0 nor == 0, e.g. -1): for the elementwise losses the reference
is the official elementwise loss with those cells' targets set to 0, then zeroed there;
for Two-way NaN is passed as -1, and the gradient of an unknown cell (which the official
code's -100 mask leaves below 1e-40) is set to 0, as `apl.losses` makes it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

OUT = Path(__file__).resolve().parent.parent / "tests" / "apl" / "data" / "robust_loss_cases.json"


def official_hill(x: Tensor, y: Tensor, lamb: float, margin: float, gamma: float) -> Tensor:
    """``Hill.forward`` with reduction 'none'."""
    logits_margin = x - margin
    pred_pos = torch.sigmoid(logits_margin)
    pred_neg = torch.sigmoid(x)
    pt = (1 - pred_pos) * y + (1 - y)
    focal_weight = pt**gamma
    los_pos = y * torch.log(pred_pos)
    los_neg = (1 - y) * -(lamb - pred_neg) * pred_neg**2
    loss = -(los_pos + los_neg)
    return loss * focal_weight


def official_splc(x: Tensor, y: Tensor, tau: float, margin: float, gamma: float, correct: bool) -> Tensor:
    """``SPLC.forward`` with reduction 'none'; ``correct`` is its ``epoch >= change_epoch``."""
    logits = torch.where(y == 1, x - margin, x)
    if correct:
        y = torch.where(torch.sigmoid(logits) > tau, torch.ones_like(y), y)
    pred = torch.sigmoid(logits)
    pt = (1 - pred) * y + pred * (1 - y)
    focal_weight = pt**gamma
    los_pos = y * F.logsigmoid(logits)
    los_neg = (1 - y) * F.logsigmoid(-logits)
    loss = -(los_pos + los_neg)
    return loss * focal_weight


def official_db(x: Tensor, y: Tensor, class_freq: Tensor, train_num: float, p: dict[str, float]) -> Tensor:
    """``ResampleLoss.forward`` (rebalance, focal, logit_reg) with reduction 'none'."""
    neg_scale, init_bias = p["neg_scale"], p["init_bias"]
    bias = -torch.log(train_num / class_freq - 1) * init_bias / neg_scale
    freq_inv = torch.ones_like(class_freq) / class_freq
    repeat_rate = torch.sum(y * freq_inv, dim=1, keepdim=True)
    pos_weight = freq_inv.clone().detach().unsqueeze(0) / repeat_rate
    weight = torch.sigmoid(p["map_beta"] * (pos_weight - p["map_gamma"])) + p["map_alpha"]
    logits = x + bias
    logits = logits * (1 - y) * neg_scale + logits * y
    weight = weight / neg_scale * (1 - y) + weight * y
    logpt = -F.binary_cross_entropy_with_logits(logits.clone(), y, reduction="none")
    pt = torch.exp(logpt)
    loss = F.binary_cross_entropy_with_logits(logits, y, weight=weight, reduction="none")
    loss = ((1 - pt) ** p["gamma"]) * loss
    return p["balance"] * loss


def official_two_way(x: Tensor, y: Tensor, tp: float, tn: float, n_inf: float = -100.0) -> Tensor:
    """``TwoWayLoss.forward``."""
    class_mask = (y > 0).any(dim=0)
    sample_mask = (y > 0).any(dim=1)
    pmask = y.masked_fill(y <= 0, n_inf).masked_fill(y > 0, 0.0)
    plogit_class = torch.logsumexp(-x / tp + pmask, dim=0).mul(tp)[class_mask]
    plogit_sample = torch.logsumexp(-x / tp + pmask, dim=1).mul(tp)[sample_mask]
    nmask = y.masked_fill(y != 0, n_inf).masked_fill(y == 0, 0.0)
    nlogit_class = torch.logsumexp(x / tn + nmask, dim=0).mul(tn)[class_mask]
    nlogit_sample = torch.logsumexp(x / tn + nmask, dim=1).mul(tn)[sample_mask]
    return F.softplus(nlogit_class + plogit_class).mean() + F.softplus(nlogit_sample + plogit_sample).mean()


DEFAULTS: dict[str, dict[str, Any]] = {
    "hill": {"lamb": 1.5, "margin": 1.0, "gamma": 2.0},
    "splc": {"tau": 0.6, "margin": 1.0, "gamma": 2.0, "correct": True},
    "dbl": {
        "map_alpha": 0.1,
        "map_beta": 10.0,
        "map_gamma": 0.2,
        "init_bias": 0.05,
        "neg_scale": 2.0,
        "gamma": 2.0,
        "balance": 2.0,
    },
    "twoway": {"tp": 4.0, "tn": 1.0},
}


def reference(loss: str, x: Tensor, y: Tensor, params: dict[str, Any], extra: dict[str, Any]) -> Tensor:
    """The official loss of `loss` (sum reduction for the elementwise ones), unknown cells as above."""
    unknown = torch.isnan(y)
    filled = torch.where(unknown, torch.zeros_like(y), y)
    if loss == "twoway":
        return official_two_way(x, torch.where(unknown, -torch.ones_like(y), y), params["tp"], params["tn"])
    if loss == "hill":
        elems = official_hill(x, filled, params["lamb"], params["margin"], params["gamma"])
    elif loss == "splc":
        elems = official_splc(x, filled, params["tau"], params["margin"], params["gamma"], params["correct"])
    else:
        freq = torch.tensor(extra["label_counts"], dtype=torch.float64)
        elems = official_db(x, filled, freq, float(extra["num_samples"]), params)
    return torch.where(unknown, torch.zeros_like(elems), elems).sum()


def _batch(
    gen: torch.Generator, shape: tuple[int, int], scale: float, density: float
) -> tuple[Tensor, Tensor]:
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    y = (torch.rand(shape, generator=gen, dtype=torch.float64) < density).to(torch.float64)
    return x, y


def inputs(gen: torch.Generator) -> list[tuple[str, Tensor, Tensor]]:
    """Random batches of several shapes, edge logits, all-negative rows, unknown cells."""
    cases = []
    for shape, scale, density in (((4, 5), 2.0, 0.4), ((16, 7), 4.0, 0.3), ((24, 12), 3.0, 0.15)):
        x, y = _batch(gen, shape, scale, density)
        y[0] = 0.0  # an all-negative row
        y[1, 0] = 1.0
        cases.append((f"random {shape[0]}x{shape[1]}", x, y))
    edge = torch.tensor(
        [0.0, 1e-6, -1e-6, 0.5, -0.5, 1.0, -1.0, 8.0, -8.0, 12.0, -12.0, 20.0], dtype=torch.float64
    )
    x = torch.stack([edge, edge.flip(0), edge * 0.5])
    y = torch.zeros_like(x)
    y[0, ::2] = 1.0
    y[1, 1::3] = 1.0
    cases.append(("edge logits, all-negative row", x, y))
    x, y = _batch(gen, (12, 9), 3.0, 0.35)
    y[0] = 0.0
    y[1, 0] = 1.0
    y[torch.rand(y.shape, generator=gen, dtype=torch.float64) < 0.2] = math.nan
    y[1, 0] = 1.0
    cases.append(("unknown cells (NaN) 12x9", x, y))
    return cases


def _variants(loss: str) -> list[dict[str, Any]]:
    base = DEFAULTS[loss]
    other = {
        "hill": {"lamb": 2.0, "margin": 0.5, "gamma": 1.5},
        "splc": {"tau": 0.7, "margin": 0.5, "gamma": 1.0, "correct": True},
        "dbl": {**base, "map_alpha": 0.2, "map_beta": 5.0, "init_bias": 0.1, "neg_scale": 5.0, "gamma": 1.5},
        "twoway": {"tp": 2.0, "tn": 0.5},
    }[loss]
    variants = [dict(base), other]
    if loss == "splc":
        variants.append({**base, "correct": False})
    return variants


def _encode(t: Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in t.tolist()]


def make_cases() -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(27)
    cases = []
    for loss in DEFAULTS:
        for params in _variants(loss):
            for name, x, y in inputs(gen):
                n, c = y.shape
                positives = torch.nan_to_num(y, nan=0.0).sum(0)
                # Training-split counts: this batch's plus a long tail, always inside [1, N - 1].
                extra = {"label_counts": [float(v) + 3.0 * (j + 1) ** 1.5 for j, v in enumerate(positives)]}
                extra["num_samples"] = float(n + 10 * c**2 + 50)
                x = x.clone().requires_grad_()
                value = reference(loss, x, y, params, extra)
                value.backward()
                assert x.grad is not None and math.isfinite(float(value.detach()))
                x.grad[torch.isnan(y)] = 0.0
                case = {"loss": loss, "case": name, "params": params, "logits": x.detach().tolist()}
                case |= {"targets": _encode(y), "value": float(value), "grad": x.grad.tolist()}
                if loss == "dbl":
                    case |= extra
                cases.append(case)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cases = make_cases()
    payload = {"source": "benchmarks/robust_loss_cases.py", "reduction": "sum (twoway: mean)", "cases": cases}
    lines = ",\n".join(json.dumps(case) for case in cases)
    header = json.dumps({k: v for k, v in payload.items() if k != "cases"})[:-1]
    args.out.write_text(f'{header}, "cases": [\n{lines}\n]}}\n')
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
