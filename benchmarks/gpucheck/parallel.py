"""Data-parallel section: steps/s of one job on 1 and on N devices, and the scaling efficiency.

N is every visible GPU (NCCL); on a machine without (the CPU dry run) it is 2 gloo
processes, so the multi-device path the worker uses is exercised wherever the check runs.
The ranks are started by torch's own launcher (`elastic_launch`, what `torch.distributed.run`
runs), each training `apl.training.train` with `DistributedSetup`, as a worker's ranks do.

Weak scaling: each device gets the same per-device batch, so N devices train a global
batch N times larger; the efficiency is samples/s on N devices over N times samples/s on
one (1.0: perfect). Timed as in the training section: the median interval between
optimizer steps after warm-up steps, read by a callback on rank 0.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from gpucheck.plan import Deadline, Plan
from gpucheck.synthetic import write_random_bert, write_text_dataset
from gpucheck.timing import median
from gpucheck.training import LEARNING_RATE, VAL_FRACTION, samples_for, text_shape

#: On GPUs, N devices should give at least this fraction of N times one device's samples/s.
GOAL_EFFICIENCY = 0.8


class _StepTimer:
    """Marks each optimizer step (rank 0 only gets callbacks) and stops after `wanted` steps."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.marks: list[float] = []

    def __getattr__(self, name: str) -> Any:  # every other hook: nothing to do
        return lambda *args: None

    def on_step_end(self, progress: Any) -> None:
        self.marks.append(time.perf_counter())

    def should_stop(self) -> bool:
        return len(self.marks) >= self.wanted


def _config(plan: Plan, model: str, dataset: Path, global_batch: int, devices: int) -> Any:
    from apl.spec import Hyperparameters, LossSpec
    from apl.training import TrainConfig

    hp = Hyperparameters(
        epochs=1,
        batch_size=global_batch,
        learning_rate=LEARNING_RATE["text"],
        val_fraction=VAL_FRACTION,
        max_length=plan.max_length,
        mixed_precision="bf16" if plan.device == "cuda" else "no",
        seed=0,
        devices=devices,
    )
    return TrainConfig(dataset, model, loss=LossSpec(name="apl"), hyperparameters=hp, device=plan.device)  # type: ignore[arg-type]


def _timed_run(config: Any, wanted: int) -> list[float]:
    """Train until `wanted` steps; the step marks (rank 0's; none on the other ranks)."""
    import dataclasses

    from apl.training import train
    from apl.training.distributed import DistributedSetup

    timer = _StepTimer(wanted)
    if "RANK" in os.environ:  # started by the launcher: one rank of the group
        setup = DistributedSetup(
            int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        )
        torch.set_num_threads(max(1, torch.get_num_threads()))
        config = dataclasses.replace(config, distributed=setup)
    train(config, [timer])  # type: ignore[list-item]
    return timer.marks


def _launch(config: Any, devices: int, wanted: int) -> list[float]:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=devices,
        run_id=f"gpu-check-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    marks: list[float] = elastic_launch(launch, _timed_run)(config, wanted)[0]
    return marks


def _row(plan: Plan, devices: int, batch: int, marks: list[float]) -> dict[str, Any]:
    timed = marks[plan.warmup_steps - 1 :]
    step_s = median([b - a for a, b in itertools.pairwise(timed)])
    backend = "single process" if devices == 1 else ("nccl" if plan.device == "cuda" else "gloo")
    return {
        "devices": devices,
        "backend": backend,
        "global_batch": batch * devices,
        "steps": len(timed) - 1,
        "steps_per_s": 1.0 / step_s,
        "samples_per_s": batch * devices / step_s,
    }


def device_count(plan: Plan) -> int:
    return torch.cuda.device_count() if plan.device == "cuda" else 2


def run(plan: Plan, deadline: Deadline, root: Path) -> dict[str, Any]:
    """Both rows and the efficiency; a single-GPU machine reports why there is nothing to scale."""
    devices = device_count(plan)
    if devices < 2:
        return {
            "rows": [],
            "goals": [],
            "checks_passed": True,
            "skipped": ["one GPU visible: nothing to scale"],
        }
    batch = plan.text_batch
    steps = plan.warmup_steps + plan.timed_steps + 1
    model = f"hf:{write_random_bert(root / 'bert-dp', text_shape(plan))}"
    dataset = write_text_dataset(root / "text-dp", samples_for(batch * devices, steps), plan.text_words)
    one = _row(plan, 1, batch, _timed_run(_config(plan, model, dataset, batch, 1), steps))
    skipped = []
    rows = [one]
    if deadline.allows(60.0):
        marks = _launch(_config(plan, model, dataset, batch * devices, devices), devices, steps)
        rows.append(_row(plan, devices, batch, marks))
    else:
        skipped.append(f"{devices} devices: time budget spent")
    goals = []
    if len(rows) == 2:
        efficiency = rows[1]["samples_per_s"] / (devices * one["samples_per_s"])
        rows[1]["efficiency"] = efficiency
        goals.append(
            {
                "name": f"data-parallel efficiency {devices} devices",
                "target": f">= {GOAL_EFFICIENCY:.1f}x",
                "measured": efficiency,
                "met": efficiency >= GOAL_EFFICIENCY if plan.device == "cuda" else None,
            }
        )
    return {"rows": rows, "goals": goals, "checks_passed": not skipped, "skipped": skipped}
