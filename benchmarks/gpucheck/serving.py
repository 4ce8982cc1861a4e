"""Serving section: the `apl` predictor, one request at a time against micro-batches of 32.

Each model of the training section's short runs is written as an artifact and loaded back
with `apl.inference.load` on the device (the path the API's serving engine takes), then
called with one input per call and with `serve_batch_size` inputs per call. Images are
passed as PNG bytes, so decoding and the evaluation transform are part of every request,
as in the service. Latencies are per call (a batch's latency is that of its 32 answers);
throughput counts inputs. The batched answers must equal the one-at-a-time answers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gpucheck.plan import Deadline, Plan
from gpucheck.timing import percentile

GOAL_RATIO = 5.0
#: Batched and single answers may differ by float reassociation only.
ANSWER_ATOL = 1e-3
WARMUP_CALLS = 3


def request_inputs(result: Any, count: int) -> list[Any]:
    """Texts, or PNG bytes of images, from the short run's dataset (repeated to `count`)."""
    from apl.data import load_stored_dataset

    stored = load_stored_dataset(result.config.dataset_dir)
    items: list[Any] = []
    for path_or_text in stored.inputs:
        if stored.modality == "image":
            items.append(Path(path_or_text).read_bytes())
        else:
            items.append(path_or_text)
    return [items[i % len(items)] for i in range(count)]


def _latencies_ms(predictor: Any, calls: list[list[Any]]) -> tuple[list[float], list[np.ndarray]]:
    times, answers = [], []
    for inputs in calls:
        start = time.perf_counter()
        answers.append(predictor.predict_proba(inputs, batch_size=len(inputs)))
        times.append(1000.0 * (time.perf_counter() - start))
    return times, answers


def serve_model(plan: Plan, name: str, result: Any, root: Path) -> dict[str, Any]:
    from apl.artifacts import save_result
    from apl.inference import load

    directory = save_result(result, root / f"artifact-{name}")
    predictor = load(directory, device=plan.device)
    size = plan.serve_batch_size
    items = request_inputs(result, max(plan.serve_single, plan.serve_batches * size))
    _latencies_ms(predictor, [[items[0]]] * WARMUP_CALLS + [items[:size]])
    single, single_answers = _latencies_ms(predictor, [[item] for item in items[: plan.serve_single]])
    batches = [items[i * size : (i + 1) * size] for i in range(plan.serve_batches)]
    batched, batch_answers = _latencies_ms(predictor, batches)
    single_rate = len(single) / (sum(single) / 1000.0)
    batched_rate = plan.serve_batches * size / (sum(batched) / 1000.0)
    flat = np.concatenate(batch_answers)
    compared = min(len(single_answers), len(flat))
    difference = float(np.abs(np.concatenate(single_answers)[:compared] - flat[:compared]).max())
    return {
        "model": name,
        "device": str(predictor.device),
        "single": _stats(single, single_rate, 1),
        "batched": _stats(batched, batched_rate, size),
        "ratio": batched_rate / single_rate,
        "max_answer_difference": difference,
        "ok": difference <= ANSWER_ATOL and bool(np.isfinite(flat).all()),
    }


def _stats(latencies: list[float], rate: float, size: int) -> dict[str, Any]:
    return {
        "calls": len(latencies),
        "inputs_per_call": size,
        "inputs_per_s": rate,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def run(plan: Plan, deadline: Deadline, trained: dict[str, Any], root: Path) -> dict[str, Any]:
    rows, skipped = [], []
    for name, result in trained.items():
        if not deadline.allows(20.0):
            skipped.append(f"{name}: time budget spent")
            continue
        rows.append(serve_model(plan, name, result, root))
    goals = [
        {
            "name": f"serving batch{plan.serve_batch_size}/single {row['model']}",
            "target": f">= {GOAL_RATIO:.1f}x",
            "measured": row["ratio"],
            "met": (row["ratio"] >= GOAL_RATIO) if plan.device == "cuda" else None,
        }
        for row in rows
    ]
    return {
        "rows": rows,
        "goals": goals,
        "checks_passed": bool(rows) and all(r["ok"] for r in rows) and not skipped,
        "skipped": skipped,
    }
