"""Loss section: forward + backward of the apl, asl and bce presets against BCE-with-logits and timm.

Every variant runs as `loss = fn(x, y); grad = autograd.grad(loss, x)` with `reduction="sum"`
(what the training loop uses). The presets go through `build_loss(LossSpec(name))`, the
modules a job gets, so on CUDA this is the compiled path whenever apl would take it.
Values and gradients of the presets are compared with `apl.losses.reference` evaluated
in float64 on the CPU. Logits are drawn as bfloat16 numbers (held in float32 for the fp32
case), so one float64 reference serves both input dtypes.

Small shapes fit in the GPU's L2 cache (60 MB on an H200), so the timed calls rotate
among several input sets of about 512 MiB together.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gpucheck.plan import Deadline, Plan, Shape
from gpucheck.timing import first_call_s, interleaved_ms, kernel_profile, median

PRESETS = ("apl", "asl", "bce")
VARIANTS = ("apl", "asl", "bce", "F.bce", "timm")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
POSITIVE_RATE = 0.05
#: The loss is computed in float32 whatever the input (spec: float32 cases within 1e-4 relative).
VALUE_RTOL = 1e-4
#: The gradient comes back in the input dtype: bf16 keeps 8 significant bits (2**-8 = 3.9e-3).
GRAD_RTOL = {"fp32": 1e-4, "bf16": 8e-3}
#: The CUDA goal of the spec: the fused loss no slower than BCE-with-logits at the largest shape.
GOAL_RATIO = 1.0
ROTATION_BYTES = 512 << 20
MAX_SETS = 128

LossFn = Callable[[Tensor, Tensor], Tensor]


def make_inputs(shape: Shape, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Logits around -1.5 (most labels negative, as in multi-label data) and 5% positive targets."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=gen) * 2.5 - 1.5).to(torch.bfloat16).float()
    targets = (torch.rand(shape, generator=gen) < POSITIVE_RATE).float()
    return logits, targets


def reference(name: str, logits: Tensor, targets: Tensor) -> tuple[float, Tensor]:
    """The float64 CPU value and gradient of a preset (autograd through the plain definition)."""
    from apl.losses.reference import reference_loss
    from apl.spec import LOSS_PRESETS

    x = logits.double().requires_grad_()
    loss = reference_loss(x, targets.double(), **LOSS_PRESETS[name], reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), grad


def loss_functions() -> dict[str, LossFn]:
    from apl.losses import build_loss
    from apl.spec import LossSpec

    fns: dict[str, LossFn] = {name: build_loss(LossSpec(name=name), reduction="sum") for name in PRESETS}
    fns["F.bce"] = lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="sum")
    fns["timm"] = timm_asl()
    return fns


def timm_asl() -> LossFn:
    """timm's ASL with the asl preset's parameters, summed (older timm has no `reduction`: it sums)."""
    import inspect

    from timm.loss import AsymmetricLossMultiLabel

    options: dict[str, Any] = {"gamma_neg": 4, "gamma_pos": 1, "clip": 0.05}
    if "reduction" in inspect.signature(AsymmetricLossMultiLabel).parameters:
        options["reduction"] = "sum"
    loss: LossFn = AsymmetricLossMultiLabel(**options)
    return loss


def fwd_bwd(fn: LossFn, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    loss = fn(x, y)
    (grad,) = torch.autograd.grad(loss, x)
    return loss, grad


def compare(value: float, grad: Tensor, ref_value: float, ref_grad: Tensor, dtype: str) -> dict[str, Any]:
    """Relative value error, max gradient error on the scale of the largest gradient, and the verdict."""
    got = grad.detach().to("cpu", torch.float64)
    scale = float(ref_grad.abs().max()) or 1.0
    rtol = GRAD_RTOL[dtype]
    value_err = abs(value - ref_value) / max(abs(ref_value), 1e-300)
    grad_ok = bool(((got - ref_grad).abs() <= rtol * ref_grad.abs() + rtol * scale).all())
    grad_err = float((got - ref_grad).abs().max()) / scale
    finite = math.isfinite(value) and bool(torch.isfinite(got).all())
    return {
        "value_rel_err": value_err,
        "grad_max_err": grad_err,
        "value_rtol": VALUE_RTOL,
        "grad_rtol": rtol,
        "ok": finite and value_err <= VALUE_RTOL and grad_ok,
    }


def input_sets(
    logits: Tensor, targets: Tensor, dtype: torch.dtype, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """The checked set first, then fresh random sets until the rotation spans ROTATION_BYTES."""
    per_set = logits.numel() * 2 * torch.finfo(dtype).bits // 8
    count = max(1, min(MAX_SETS, ROTATION_BYTES // max(per_set, 1)))
    sets = [(logits.to(device, dtype).requires_grad_(), targets.to(device, dtype))]
    for _ in range(count - 1):
        x = (torch.randn(logits.shape, device=device) * 2.5 - 1.5).to(dtype).requires_grad_()
        y = (torch.rand(logits.shape, device=device) < POSITIVE_RATE).to(dtype)
        sets.append((x, y))
    return sets


def _path(numel: int) -> str:
    from apl.losses import COMPILE_MIN_NUMEL, compile_enabled

    return "compiled" if numel >= COMPILE_MIN_NUMEL and compile_enabled() else "eager"


def compile_stats() -> dict[str, Any]:
    """How many fused-kernel configurations were compiled, and what dynamo counted (graphs, breaks)."""
    from apl.losses import _fused, compile_enabled

    stats: dict[str, Any] = {"kernel_configs": len(_fused._compiled), "compile_enabled": compile_enabled()}
    try:
        from torch._dynamo.utils import counters

        stats["unique_graphs"] = int(counters["stats"]["unique_graphs"])
        stats["graph_breaks"] = int(sum(counters["graph_break"].values()))
    except Exception as exc:  # a private counter that may move between torch versions
        stats["counters"] = f"unavailable ({type(exc).__name__})"
    return stats


def first_calls(
    fns: dict[str, LossFn], sets: list[tuple[Tensor, Tensor]], device: torch.device
) -> tuple[dict[str, float], dict[str, tuple[float, Tensor]], list[str]]:
    """First call of every variant (compilation included): seconds, (value, grad), warnings."""
    x, y = sets[0]
    seconds: dict[str, float] = {}
    outputs: dict[str, tuple[float, Tensor]] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, fn in fns.items():
            box: list[tuple[Tensor, Tensor]] = []
            seconds[name] = first_call_s(lambda fn=fn, box=box: box.append(fwd_bwd(fn, x, y)), device)
            loss, grad = box[0]
            outputs[name] = (float(loss.detach().float()), grad)
    notes = sorted({str(w.message)[:200] for w in caught if issubclass(w.category, RuntimeWarning)})
    return seconds, outputs, notes


def _cycled(fn: LossFn, sets: list[tuple[Tensor, Tensor]]) -> Callable[[], Any]:
    turn = itertools.cycle(sets)

    def call() -> Any:
        x, y = next(turn)
        return fwd_bwd(fn, x, y)

    return call


def run_case(
    plan: Plan,
    shape: Shape,
    dtype_name: str,
    data: tuple[Tensor, Tensor],
    refs: dict[str, tuple[float, Tensor]],
    fns: dict[str, LossFn],
) -> dict[str, Any]:
    """One shape and input dtype: first calls, correctness of the presets, interleaved timings."""
    device = torch.device(plan.device)
    sets = input_sets(*data, DTYPES[dtype_name], device)
    seconds, outputs, notes = first_calls(fns, sets, device)
    checks = {name: compare(*outputs[name], *refs[name], dtype_name) for name in PRESETS}
    asl_value = refs["asl"][0]
    times = interleaved_ms(
        {name: _cycled(fn, sets) for name, fn in fns.items()}, plan.loss_repeats, plan.loss_warmup, device
    )
    ms = {name: median(values) for name, values in times.items()}
    return {
        "shape": list(shape),
        "dtype": dtype_name,
        "input_sets": len(sets),
        "repeats": plan.loss_repeats,
        "ms": ms,
        "first_call_ms": {name: 1000.0 * s for name, s in seconds.items()},
        "ratio_vs_bce": {name: ms[name] / ms["F.bce"] for name in VARIANTS},
        "path": {name: _path(shape[0] * shape[1]) for name in PRESETS},
        "checks": checks,
        "timm_vs_asl_rel": abs(outputs["timm"][0] - asl_value) / abs(asl_value),
        "fbce_vs_bce_rel": abs(outputs["F.bce"][0] - refs["bce"][0]) / abs(refs["bce"][0]),
        "warnings": notes,
    }


def profiles(plan: Plan, shape: Shape, fns: dict[str, LossFn]) -> list[dict[str, Any]]:
    """Kernel count and time per kernel of apl, F.bce and timm at the goal shape, per input dtype."""
    device = torch.device(plan.device)
    logits, targets = make_inputs(shape, seed=1)
    out = []
    for dtype_name, dtype in DTYPES.items():
        x = logits.to(device, dtype).requires_grad_()
        y = targets.to(device, dtype)
        for name in ("apl", "F.bce", "timm"):
            entry = kernel_profile(lambda fn=fns[name], x=x, y=y: fwd_bwd(fn, x, y), device)
            out.append({"variant": name, "dtype": dtype_name, "shape": list(shape), **entry})
    return out


def goals(plan: Plan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """apl no slower than BCE-with-logits at the largest shape, fp32 and bf16 (judged on CUDA only)."""
    largest = list(plan.loss_shapes[-1])
    out = []
    for row in rows:
        if row["shape"] != largest:
            continue
        ratio = row["ratio_vs_bce"]["apl"]
        out.append(
            {
                "name": f"loss apl/F.bce {largest[0]}x{largest[1]} {row['dtype']}",
                "target": f"<= {GOAL_RATIO:.2f}x",
                "measured": ratio,
                "met": (ratio <= GOAL_RATIO) if plan.device == "cuda" else None,
            }
        )
    return out


def run(plan: Plan, deadline: Deadline) -> dict[str, Any]:
    """The loss section: every shape x dtype row, the profiles, the goals and the checks."""
    fns = loss_functions()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for shape in plan.loss_shapes:
        if not deadline.allows(60.0):
            skipped.append(f"{shape[0]}x{shape[1]}: time budget spent")
            continue
        data = make_inputs(shape)
        refs = {name: reference(name, *data) for name in PRESETS}
        for dtype_name in DTYPES:
            rows.append(run_case(plan, shape, dtype_name, data, refs, fns))
        del refs
    prof = profiles(plan, plan.loss_shapes[-1], fns) if deadline.allows(30.0) else []
    passed = all(check["ok"] for row in rows for check in row["checks"].values())
    return {
        "rows": rows,
        "profiles": prof,
        "goals": goals(plan, rows),
        "compile": compile_stats(),
        "checks_passed": passed and not skipped,
        "skipped": skipped,
    }
