"""Timing on CUDA with events (device work is asynchronous) and on CPU with the wall clock."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_s(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call including compilation and the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_ms(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, the functions taking turns (so drift hits all alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    if device.type != "cuda":
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(1000.0 * (time.perf_counter() - start))
        return times
    events: dict[str, list[tuple[Any, Any]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            events[name].append((begin, end))
    torch.cuda.synchronize(device)
    return {name: [b.elapsed_time(e) for b, e in pairs] for name, pairs in events.items()}


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def kernel_profile(fn: Callable[[], Any], device: torch.device, top: int = 8) -> dict[str, Any]:
    """What one call launches: device kernels on CUDA (count, total, the longest, all in order).

    On a CPU there are no kernels; the top-level operators stand in for them, so the entry
    has the same fields everywhere.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()  # never profile a first call (compilation, caches)
    synchronize(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    if device.type == "cuda":
        picked = [e for e in prof.events() if str(e.device_type).endswith("CUDA")]
        times = [float(e.time_range.elapsed_us()) for e in picked]
    else:
        picked = [e for e in prof.events() if e.cpu_parent is None]
        times = [float(e.cpu_time_total) for e in picked]
    ranked = sorted(zip(times, (e.name for e in picked), strict=True), reverse=True)[:top]
    return {
        "unit": "kernels" if device.type == "cuda" else "top-level operators",
        "count": len(picked),
        "total_us": float(sum(times)),
        "top": [{"name": name[:90], "us": us} for us, name in ranked],
        # Every kernel in launch order (the first 64): where the time of a missed goal goes.
        "sequence": [{"name": e.name[:90], "us": us} for e, us in zip(picked[:64], times, strict=False)],
    }
