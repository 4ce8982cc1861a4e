"""Every worked case of the loss spec (spec/loss_cases_public.json in ../shared, else the committed copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from apl.losses import asymmetric_polynomial_loss

SHARED_CASES = Path(__file__).parents[3] / "shared/spec/loss_cases_public.json"
LOCAL_CASES = Path(__file__).parent / "data/loss_cases_public.json"


def load_cases() -> list[dict[str, Any]]:
    """The shared spec copy when it sits beside the repository, else the committed copy."""
    path = SHARED_CASES if SHARED_CASES.is_file() else LOCAL_CASES
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


CASES = load_cases()
TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4}


def test_the_committed_copy_matches_the_shared_spec() -> None:
    local = json.loads(LOCAL_CASES.read_text())
    if SHARED_CASES.is_file():
        assert json.loads(SHARED_CASES.read_text()) == local
    assert len(local["cases"]) >= 30


def run_case(case: dict[str, Any], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    params = dict(case["params"])
    logits = torch.tensor(case["logits"], dtype=dtype, requires_grad=True)
    targets = torch.tensor(case["targets"], dtype=dtype)
    loss = asymmetric_polynomial_loss(logits, targets, **params, backend="eager")
    loss.sum().backward()
    assert logits.grad is not None
    return loss.detach().double(), logits.grad.double()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_public_case(case: dict[str, Any], dtype: torch.dtype) -> None:
    loss, grad = run_case(case, dtype)
    expected_loss = torch.tensor(case["loss"], dtype=torch.float64)
    expected_grad = torch.tensor(case["grad"], dtype=torch.float64)
    rtol = TOLERANCE[dtype]
    assert loss.shape == expected_loss.shape
    assert loss.dtype == torch.float64 and torch.isfinite(loss).all()
    torch.testing.assert_close(loss, expected_loss, rtol=rtol, atol=1e-300)
    # Gradients near 0 are compared on the scale of the largest one (the sum's gradient).
    torch.testing.assert_close(grad, expected_grad, rtol=rtol, atol=rtol * float(expected_grad.abs().max()))
