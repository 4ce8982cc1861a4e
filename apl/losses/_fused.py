"""Running the fused body: autograd wiring, the torch.compile cache and the eager fallback.

Why a custom autograd.Function: the loss and its closed-form gradient come out of one
pass in forward and backward only scales the saved gradient, which is what makes the
loss cost about as much as BCE-with-logits instead of the 6-9x of an unfused chain.

Why a cache keyed by structure with a copied code object per entry: dynamo caches
compiled graphs per code object and gives up after a few recompiles, so every
configuration gets its own copy of the entry function and parameter values travel as
a tensor (a new ``clip`` never recompiles).
"""

from __future__ import annotations

import dataclasses
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from apl.losses._kernel import KernelConfig, loss_and_grad

Backend = Literal["auto", "compiled", "eager"]
KernelOutput = tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]
Kernel = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, Tensor], KernelOutput]

#: ``backend="auto"`` compiles only for inputs at least this large: small inputs (tests,
#: tiny label sets) run eagerly and never pay the first-call compile time.
COMPILE_MIN_NUMEL = 16384

_lock = threading.Lock()
_compiled: dict[KernelConfig, Kernel] = {}
_state = {"enabled": True, "failed": False}


def set_compile_enabled(enabled: bool) -> None:
    """Switch torch.compile on or off for every later call (off: always the eager body)."""
    _state["enabled"] = enabled


def compile_enabled() -> bool:
    """Whether calls may use a compiled kernel (off after a compile failure too)."""
    return _state["enabled"] and not _state["failed"]


def reset_compiled_kernels() -> None:
    """Forget compiled kernels and a past compile failure (tests, or after changing threads)."""
    with _lock:
        _compiled.clear()
        _state["failed"] = False


def _entry(config: KernelConfig) -> Kernel:
    def kernel(
        x: Tensor, y: Tensor, mask: Tensor | None, weight: Tensor | None, theta: Tensor
    ) -> KernelOutput:
        return loss_and_grad(x, y, mask, weight, theta, config)

    code = kernel.__code__.replace(co_name=f"apl_loss_kernel_{len(_compiled)}")
    fresh = types.FunctionType(code, kernel.__globals__, code.co_name, None, kernel.__closure__)
    return fresh


def compile_kernel(fn: Kernel) -> Kernel:
    """The compile step, a module attribute so tests can make it fail."""
    # FMA contraction: the kernel is mostly polynomial arithmetic (about 8% faster on CPU).
    options: dict[str, str | int | bool | Callable[..., Any]] = {
        "cpp.enable_floating_point_contract_flag": "fast"
    }
    return torch.compile(fn, dynamic=True, fullgraph=True, options=options)


def _compiled_kernel(config: KernelConfig) -> Kernel | None:
    with _lock:
        kernel = _compiled.get(config)
        if kernel is None:
            try:
                kernel = compile_kernel(_entry(config))
            except Exception as exc:
                _give_up(exc)
                return None
            _compiled[config] = kernel
        return kernel


def _give_up(exc: BaseException) -> None:
    _state["failed"] = True
    warnings.warn(
        f"apl.losses: torch.compile is unavailable or failed ({type(exc).__name__}: {exc}); "
        "using the eager implementation from now on",
        RuntimeWarning,
        stacklevel=3,
    )


def _call(
    config: KernelConfig,
    backend: Backend,
    x: Tensor,
    y: Tensor,
    mask: Tensor | None,
    weight: Tensor | None,
    theta: Tensor,
) -> KernelOutput:
    wants = backend == "compiled" or (backend == "auto" and x.numel() >= COMPILE_MIN_NUMEL)
    if wants and compile_enabled():
        with_grad = dataclasses.replace(config, need_grad=True)
        if not config.need_grad and with_grad in _compiled:
            # Validation after training steps: the training kernel also gives the loss,
            # and reusing it saves a second compilation for a slightly dearer call.
            config = with_grad
        kernel = _compiled_kernel(config)
        if kernel is not None:
            try:
                # Detached aliases are not views, so dynamo guards on no base shape. Sizes are
                # dynamic (backed): sizes 0/1 and the 4096-element reduction bucket get their
                # own graph; unbacked sizes would avoid that but split the loop in three.
                x, y = x.detach(), y.detach()
                mask = None if mask is None else mask.detach()
                with torch.no_grad():
                    return kernel(x, y, mask, weight, theta)
            except Exception as exc:  # compilation happens lazily, on the first call
                _give_up(exc)
    with torch.no_grad():
        return loss_and_grad(x, y, mask, weight, theta, config)


def run_kernel(
    config: KernelConfig,
    backend: Backend,
    x: Tensor,
    y: Tensor,
    mask: Tensor | None,
    weight: Tensor | None,
    theta: Tensor,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Compiled kernel where wanted and working, else the same body eagerly.

    The hard-target path reports targets that are not 0/1; then the call is redone on
    the general path, so soft targets cost a second pass and hard ones never pay for
    the general mixing.
    """
    loss, grad, scale, n_soft = _call(config, backend, x, y, mask, weight, theta)
    if n_soft is not None and bool(n_soft):
        general = dataclasses.replace(config, hard_targets=False)
        loss, grad, scale, _ = _call(general, backend, x, y, mask, weight, theta)
    return loss, grad, scale


class FusedLoss(torch.autograd.Function):
    """Forward returns the loss and keeps the gradient; backward only scales it."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        y: Tensor,
        mask: Tensor | None,
        weight: Tensor | None,
        theta: Tensor,
        config: KernelConfig,
        backend: Backend,
    ) -> Tensor:
        loss, grad, scale = run_kernel(config, backend, x, y, mask, weight, theta)
        assert grad is not None  # the Function is only used when a gradient is wanted
        ctx.save_for_backward(grad, *(() if scale is None else (scale,)))
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad, *scale = ctx.saved_tensors
        factor = grad_output * scale[0] if scale else grad_output
        if not _graph_kept():
            # The saved gradient dies with this backward: reuse its memory, and skip the
            # pass entirely for the usual loss.backward() (a CPU scalar 1, no device sync).
            if factor.dim() == 0 and factor.device.type == "cpu" and factor.item() == 1.0:
                return grad, None, None, None, None, None, None
            return grad.mul_(factor), None, None, None, None, None, None
        return grad * factor, None, None, None, None, None, None


def _graph_kept() -> bool:
    """Whether this backward runs with retain_graph (then the saved gradient must stay intact)."""
    keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if keep_graph is None else bool(keep_graph())
