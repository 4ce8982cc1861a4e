"""The torch.compile path: one real compile, reuse without recompiling, and the eager fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch._dynamo.utils import counters

from apl.losses import (
    COMPILE_MIN_NUMEL,
    _fused,
    asymmetric_polynomial_loss,
    compile_enabled,
    reset_compiled_kernels,
    set_compile_enabled,
)
from apl.spec import LOSS_PRESETS

APL = LOSS_PRESETS["apl"]


@pytest.fixture(autouse=True)
def fresh_compile_state() -> Iterator[None]:
    reset_compiled_kernels()
    set_compile_enabled(True)
    yield
    reset_compiled_kernels()
    set_compile_enabled(True)


def run(
    shape: tuple[int, int], backend: str, seed: int = 0, **params: float
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 8).requires_grad_()
    with torch.no_grad():
        x.view(-1)[:3] = torch.tensor([-100.0, 100.0, 0.0])[: x.numel()]
    y = (torch.rand(shape, generator=gen) < 0.3).float()
    loss = asymmetric_polynomial_loss(x, y, **{**APL, **params}, backend=backend)  # type: ignore[arg-type]
    loss.backward()
    assert x.grad is not None
    return loss.detach(), x.grad


def test_compiled_kernel_matches_eager_and_is_reused_across_shapes_and_values() -> None:
    """The only test that really compiles (a few seconds, less with a warm inductor cache)."""
    loss, grad = run((37, 11), "compiled")
    expected_loss, expected_grad = run((37, 11), "eager")
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert compile_enabled()
    graphs = counters["stats"]["unique_graphs"]
    # New sizes and new parameter values of the same structure: no new graph.
    for shape, params in (((5, 7), {"clip": 0.1}), ((2, 1), {"alpha1": 0.3}), ((64, 60), {"beta": 2.0})):
        loss, grad = run(shape, "compiled", seed=1, **params)
        expected_loss, expected_grad = run(shape, "eager", seed=1, **params)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    # Validation (no grad) reuses the training kernel instead of compiling another one.
    with torch.no_grad():
        x = torch.randn(9, 13)
        y = (torch.rand(9, 13) < 0.3).float()
        value = asymmetric_polynomial_loss(x, y, **APL, backend="compiled")
    torch.testing.assert_close(
        value, asymmetric_polynomial_loss(x, y, **APL, backend="eager"), rtol=1e-5, atol=0
    )
    assert counters["stats"]["unique_graphs"] == graphs


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fn: object) -> object:
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_fused, "compile_kernel", broken)
    expected = run((4, 6), "eager")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        got = run((4, 6), "compiled")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not compile_enabled()
    torch.testing.assert_close(run((4, 6), "compiled"), expected, rtol=0, atol=0)  # no second try


def test_failure_at_the_first_call_falls_back_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor compiles lazily: the error surfaces when the compiled function is called."""
    calls = []

    def lazy(fn: object) -> object:
        def compiled(*args: object) -> object:
            calls.append(args)
            raise OSError("cc1plus: fatal error")

        return compiled

    monkeypatch.setattr(_fused, "compile_kernel", lazy)
    expected = run((3, 5), "eager")
    with pytest.warns(RuntimeWarning, match="cc1plus"):
        got = run((3, 5), "compiled")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(calls) == 1 and not compile_enabled()
    reset_compiled_kernels()
    assert compile_enabled()


def test_switch_and_auto_policy_decide_whether_to_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[object] = []

    def recording(fn: object) -> object:
        requested.append(fn)
        raise RuntimeError("compile requested")

    monkeypatch.setattr(_fused, "compile_kernel", recording)
    set_compile_enabled(False)
    run((64, 300), "compiled")
    assert requested == []
    set_compile_enabled(True)
    run((4, 6), "auto")  # small: eager, no compile
    assert requested == []
    big = (COMPILE_MIN_NUMEL // 100 + 1, 100)
    with pytest.warns(RuntimeWarning, match="compile requested"):
        run(big, "auto")
    assert len(requested) == 1
