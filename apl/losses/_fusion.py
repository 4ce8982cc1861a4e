"""Fused value-and-gradient for the losses of `apl.losses.robust`: one pass, compiled where it pays.

Each loss there is written as one function that returns its (reduced) value and the
closed-form gradient of that value with respect to the logits. `fused` runs it without
autograd (compiled with torch.compile for inputs of at least ``COMPILE_MIN_NUMEL``
elements, eagerly otherwise or when compiling fails) and hands the gradient to autograd
through `_SavedGradient`, so backward costs one multiplication. The same design as the
APL kernel (`apl.losses._fused`), kept apart because these bodies take other inputs.

A loss may pair a fast body with an exact one (`Guarded`): the fast body also returns a
flag that says whether its shortcut holds for these inputs (0/1 targets, logits in a
range where a dropped term is below rounding); where it does not, the exact body runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from apl.losses import _fused

Body = Callable[..., tuple[Tensor, Tensor | None]]
#: A fast body: value, gradient and whether its shortcut holds for these inputs (a bool tensor).
FastBody = Callable[..., tuple[Tensor, Tensor | None, Tensor]]


@dataclass(frozen=True)
class Guarded:
    """A fast body and the exact body that stands in where the fast one's flag is false."""

    fast: FastBody
    exact: Body


_lock = threading.Lock()
_compiled: dict[Hashable, Callable[..., Any]] = {}


def _compiled_body(key: Hashable, body: Callable[..., Any]) -> Callable[..., Any] | None:
    """The compiled body for `key` (one compiled graph per loss and static configuration)."""
    with _lock:
        compiled = _compiled.get(key)
        if compiled is None:
            try:
                compiled = torch.compile(body, dynamic=True, fullgraph=True)
            except Exception as exc:
                _fused._give_up(exc)
                return None
            _compiled[key] = compiled
        return compiled


def run_body(
    key: Hashable, body: Body | Guarded, x: Tensor, *inputs: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """`body(x, *inputs)` without autograd: compiled when large enough and working, else eager.

    A `Guarded` body runs its fast body first and its exact one only where the flag says so.
    """
    if isinstance(body, Guarded):
        loss, grad, holds = _run(("fast", key), body.fast, x, *inputs)
        if bool(holds):
            return loss, grad
        key, body = ("exact", key), body.exact
    result: tuple[Tensor, Tensor | None] = _run(key, body, x, *inputs)
    return result


def _run(key: Hashable, body: Callable[..., Any], x: Tensor, *inputs: Tensor | None) -> Any:
    x = x.detach()
    if x.numel() >= _fused.COMPILE_MIN_NUMEL and _fused.compile_enabled():
        compiled = _compiled_body(key, body)
        if compiled is not None:
            try:
                with torch.no_grad():
                    return compiled(x, *inputs)
            except Exception as exc:  # compilation happens lazily, on the first call
                _fused._give_up(exc)
    with torch.no_grad():
        return body(x, *inputs)


class _SavedGradient(torch.autograd.Function):
    """Forward runs the fused body and keeps its gradient; backward only scales it."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, key: Hashable, body: Body | Guarded, *inputs: Tensor | None
    ) -> Tensor:
        loss, grad = run_body(key, body, x, *inputs)
        assert grad is not None
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        rest = (None,) * (len(ctx.needs_input_grad) - 1)
        if not _fused._graph_kept():
            # The saved gradient dies with this backward: skip the pass for the usual
            # loss.backward() (a CPU scalar 1), else scale it in place.
            if grad_output.dim() == 0 and grad_output.device.type == "cpu" and grad_output.item() == 1.0:
                return (grad, *rest)
            return (grad.mul_(grad_output), *rest)
        return (grad * grad_output, *rest)


def fused(
    key: Hashable, make_body: Callable[[bool], Body | Guarded], x: Tensor, *inputs: Tensor | None
) -> Tensor:
    """The loss of `make_body(need_grad)` at `x`, differentiable in `x` when autograd wants it.

    `key` names the static configuration (loss, parameters, reduction); the gradient
    flag is added to it. The caller's grad mode is never changed.
    """
    need_grad = torch.is_grad_enabled() and x.requires_grad
    body = make_body(need_grad)
    if need_grad:
        out: Tensor = _SavedGradient.apply(x, (key, True), body, *inputs)
        return out
    loss, _ = run_body((key, False), body, x, *inputs)
    return loss


def reset() -> None:
    """Forget the compiled bodies (tests)."""
    with _lock:
        _compiled.clear()
