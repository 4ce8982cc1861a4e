"""The training callback that connects `apl`'s loop to the job's row.

It writes a MetricPoint per evaluation and progress every second, and answers
`should_stop()` for a cancel (the job's `cancel_requested` flag), a warm shutdown of
the worker, or a lost lease. Database reads are throttled so a fast loop does not
turn into a database benchmark; a cancel is still seen within a fraction of a second.
A database hiccup while reporting is logged, never a reason to fail the training.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from apl.metrics import EpochMetrics
from apl.training import Progress, TrainerCallback, TrainInfo
from core.jobs import lifecycle
from core.settings import Settings
from worker import shutdown

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.2
METRIC_WRITE_TRIES = 3

StopReason = Literal["lost", "cancel", "shutdown"]


class JobCallback(TrainerCallback):
    def __init__(self, job: lifecycle.ClaimedJob, settings: Settings, lost: threading.Event) -> None:
        self.job = job
        self.settings = settings
        #: Set by the heartbeat when the job is no longer ours (its lease was taken back).
        self.lost = lost
        self.stop_reason: StopReason | None = None
        self.start_epoch = 0
        self._steps_per_epoch = 0
        self._last_progress = 0.0
        self._last_poll = 0.0

    def _progress(self, progress: dict[str, int]) -> None:
        try:
            lifecycle.set_progress(self.job.id, self.job.attempt, progress, self.settings)
        except Exception:
            log.warning("could not store the progress of job %s; going on", self.job.id, exc_info=True)

    def on_train_begin(self, info: TrainInfo) -> None:
        self.start_epoch = info.start_epoch
        self._steps_per_epoch = info.steps_per_epoch
        # Evaluations past the checkpoint (or all, when starting afresh) are redone now.
        lifecycle.drop_metric_points_after(self.job.id, self.job.attempt, info.start_epoch, self.settings)
        self._progress(
            {
                "epoch": info.start_epoch,
                "epochs": info.epochs,
                "step": info.start_epoch * info.steps_per_epoch,
                "steps": info.total_steps,
            }
        )

    def on_step_end(self, progress: Progress) -> None:
        now = time.monotonic()
        epoch_end = self._steps_per_epoch > 0 and progress.step % self._steps_per_epoch == 0
        if epoch_end or now - self._last_progress >= PROGRESS_EVERY_SECONDS:
            self._last_progress = now
            self._progress(progress.as_dict())

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        for attempt in range(METRIC_WRITE_TRIES):
            try:
                if not lifecycle.add_metric_point(
                    self.job.id, self.job.attempt, metrics.as_metric_point(), self.settings
                ):
                    self.lost.set()
                return
            except Exception:
                if attempt + 1 == METRIC_WRITE_TRIES:
                    raise
                log.warning("could not store a metric point of job %s; retrying", self.job.id, exc_info=True)
                time.sleep(0.5 * (attempt + 1))

    def should_stop(self) -> bool:
        if self.stop_reason is not None:
            return True
        if self.lost.is_set():
            self.stop_reason = "lost"
        elif shutdown.requested():
            self.stop_reason = "shutdown"
        else:
            now = time.monotonic()
            if now - self._last_poll >= CANCEL_POLL_SECONDS:
                self._last_poll = now
                try:
                    if lifecycle.cancel_requested(self.job.id, self.settings):
                        self.stop_reason = "cancel"
                except Exception:
                    log.warning("could not check job %s for a cancel; going on", self.job.id, exc_info=True)
        return self.stop_reason is not None
