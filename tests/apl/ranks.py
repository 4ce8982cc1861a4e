"""Run `apl.training.train` as the ranks of a data-parallel group, through torch's own launcher.

`launch` starts `world_size` processes with `torch.distributed.launcher.elastic_launch`
(the elastic agent behind `torch.distributed.run`, gloo on CPU); each runs `run_rank`,
which reads the launcher's RANK / WORLD_SIZE / LOCAL_RANK (tests may read the
environment; `apl` takes them as plain arguments) and trains. The per-rank return
values come back to the test.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import torch

from apl.metrics import EpochMetrics
from apl.training import TrainConfig, TrainerCallback, train
from apl.training.distributed import DistributedSetup


def summary(result: Any) -> dict[str, Any]:
    """What the tests compare (picklable): the history without wall-clock times, and the weights."""
    history = [{k: v for k, v in dataclasses.asdict(m).items() if k != "time_s"} for m in result.history]
    weights = {k: v.detach().cpu().clone() for k, v in result.model.module.state_dict().items()}
    return {
        "history": history,
        "weights": weights,
        "epochs_completed": result.epochs_completed,
        "thresholds": result.thresholds,
        "stopped": result.stopped,
    }


class StopAfterEpoch(TrainerCallback):
    """Asks to stop once `epoch` is evaluated (and checkpointed), like a cancel would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.stop = False

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        self.stop = self.stop or metrics.epoch >= self.epoch

    def should_stop(self) -> bool:
        return self.stop


def run_rank(config: TrainConfig, head_dropout: float | None, stop_after: int | None) -> dict[str, Any]:
    """One rank's training run; returns its summary. Every rank gets the callback; only rank 0 calls it."""
    torch.set_num_threads(1)
    if head_dropout is not None:
        import apl.models.text

        apl.models.text.HEAD_DROPOUT = head_dropout
    setup = DistributedSetup(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )
    callbacks = [StopAfterEpoch(stop_after)] if stop_after is not None else []
    return summary(train(dataclasses.replace(config, distributed=setup), callbacks))


def launch(
    config: TrainConfig, world_size: int, head_dropout: float | None = None, stop_after: int | None = None
) -> dict[int, Any]:
    """Train `config` on `world_size` gloo processes; each rank's summary, by rank."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=world_size,
        run_id=f"test-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    results: dict[int, Any] = elastic_launch(launch_config, run_rank)(config, head_dropout, stop_after)
    return results
