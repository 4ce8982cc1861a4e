"""A plain autograd implementation of the definition, one elementwise op after another.

Kept as an independent cross-check of the fused kernel's hand-derived gradient (its
gradient comes from autograd) and as the "unfused chain" the speed benchmark
compares against. Stable forms as well, but no series for small ``1 - p``, so it is
less precise for confident positives than the fused loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_loss(
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
) -> Tensor:
    """docs/losses.md written out with autograd ops (soft targets mixed as the official codes)."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    y = targets.to(x.dtype)
    p = torch.sigmoid(x)
    q = torch.sigmoid(-x)
    a_pos = -F.logsigmoid(x) - (1 - alpha1) * q - (0.5 - alpha2) * q**2
    if clip > 0:
        pm = (p - clip).clamp(min=0)
        a_neg = -torch.log1p(-pm) - (beta - 1) * (1 - pm)
    else:
        pm = p
        a_neg = -F.logsigmoid(-x) - (beta - 1) * q
    u = y * q + (1 - y) * pm
    w = u ** (gamma_pos * y + gamma_neg * (1 - y))
    if detach_focal_weight:
        w = w.detach()
    loss = w * (y * a_pos + (1 - y) * a_neg)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss
