"""The training callback that connects `apl`'s loop to the job's row.

It writes a MetricPoint per evaluation and progress every few steps, and answers
`should_stop()` from the job's `cancel_requested` flag. Database reads are
throttled so a fast loop does not turn into a database benchmark; a cancel is
still seen within one step of a few hundred milliseconds.
"""

from __future__ import annotations

import threading
import time

from api.settings import Settings
from apl.metrics import EpochMetrics
from apl.training import Progress, TrainerCallback, TrainInfo
from worker import state

PROGRESS_EVERY_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.2


class JobCallback(TrainerCallback):
    def __init__(self, job_id: str, settings: Settings, lost: threading.Event) -> None:
        self.job_id = job_id
        self.settings = settings
        #: Set by the heartbeat when the job is no longer ours (its lease was taken back).
        self.lost = lost
        self.cancelled = False
        self._last_progress = 0.0
        self._last_poll = 0.0

    def on_train_begin(self, info: TrainInfo) -> None:
        state.set_progress(
            self.job_id,
            {
                "epoch": info.start_epoch,
                "epochs": info.epochs,
                "step": info.start_epoch * info.steps_per_epoch,
                "steps": info.total_steps,
            },
            self.settings,
        )

    def on_step_end(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_SECONDS or progress.step == progress.steps:
            self._last_progress = now
            state.set_progress(self.job_id, progress.as_dict(), self.settings)

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        state.add_metric_point(self.job_id, metrics.as_metric_point(), self.settings)

    def should_stop(self) -> bool:
        if self.lost.is_set():
            return True
        now = time.monotonic()
        if now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            self.cancelled = state.cancel_requested(self.job_id, self.settings)
        return self.cancelled
