"""Hooks the training loop calls, in the style of transformers' `TrainerCallback`.

The worker implements these to write progress and metric points to the database
and to pass a cancel request in; the loop asks `should_stop()` before every
training step (and between evaluation batches), so a cancel takes effect within
one step.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apl.metrics import EpochMetrics

if TYPE_CHECKING:
    from apl.training.config import TrainResult


@dataclass(frozen=True)
class Progress:
    """Where training is: `step` counts optimizer steps over the whole run (1-based)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    #: Running per-sample training loss of the current epoch.
    loss: float
    #: True at the last step before an evaluation (an epoch's end, or a round's: apl.training.budget).
    round_end: bool = False

    def as_dict(self) -> dict[str, int]:
        """The job's `progress` JSON: {epoch, epochs, step, steps}."""
        return {"epoch": self.epoch, "epochs": self.epochs, "step": self.step, "steps": self.steps}


@dataclass(frozen=True)
class TrainInfo:
    """Facts known once data and model are ready, before the first step."""

    labels: list[str]
    num_train: int
    num_val: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    #: Epochs already done when resuming from a checkpoint, else 0.
    start_epoch: int
    device: str
    precision: str
    base_model: str
    modality: str
    #: Optimizer steps already done when resuming, else 0.
    start_step: int = 0
    #: Evaluation rounds per pass over the training data (apl.training.budget); `epochs` counts
    #: rounds when above 1, and `steps_per_epoch` is then a pass's steps.
    rounds_per_epoch: int = 1


class TrainerCallback:
    """Override what you need; every hook is a no-op by default."""

    def on_train_begin(self, info: TrainInfo) -> None:
        """Called once, after data, model and (when resuming) the checkpoint are loaded."""

    def on_step_end(self, progress: Progress) -> None:
        """Called after every optimizer step; throttle expensive work yourself."""

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        """Called after each epoch's validation, before its checkpoint is written.

        After a crash the epoch may be evaluated again on resume, so whatever this
        writes should be idempotent per epoch.
        """

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        """Called after the checkpoint of `epoch` is safely on disk."""

    def on_train_end(self, result: TrainResult) -> None:
        """Called once with the result, also when training was stopped."""

    def should_stop(self) -> bool:
        """Return True to stop training at the next step (cancel)."""
        return False


class StopFlag(TrainerCallback):
    """A thread-safe cancel switch: call `stop()` from anywhere (e.g. a polling thread)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        self._event.set()

    def should_stop(self) -> bool:
        return self._event.is_set()


class CallbackList:
    """Fans each hook out to every callback in order."""

    def __init__(self, callbacks: Sequence[TrainerCallback]) -> None:
        self.callbacks = list(callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def should_stop(self) -> bool:
        return any(callback.should_stop() for callback in self.callbacks)
