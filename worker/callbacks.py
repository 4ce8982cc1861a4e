"""The training callback that connects `apl`'s loop to the job's row.

It writes a MetricPoint (and the history's epoch event) per evaluation, a
checkpoint event per saved checkpoint, progress every second, logs one line per
epoch (losses, mAP, F1, training samples per second), and answers
`should_stop()` for a cancel (the job's `cancel_requested` flag), a warm shutdown of
the worker, a lost lease, or (for a sweep's search trial) the pruner. Database reads
are throttled so a fast loop does not turn into a database benchmark; a cancel is still
seen within a fraction of a second. A database hiccup while reporting is logged, never
a reason to fail the training.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

from apl.metrics import EpochMetrics
from apl.training import Progress, TrainerCallback, TrainInfo
from core.jobs import history, lifecycle
from core.settings import Settings
from core.sweeps import search
from worker import shutdown

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.2
METRIC_WRITE_TRIES = 3

StopReason = Literal["lost", "cancel", "shutdown", "pruned"]


class JobCallback(TrainerCallback):
    def __init__(self, job: lifecycle.ClaimedJob, settings: Settings, lost: threading.Event) -> None:
        self.job = job
        self.settings = settings
        #: Set by the heartbeat when the job is no longer ours (its lease was taken back).
        self.lost = lost
        self.stop_reason: StopReason | None = None
        self.start_epoch = 0
        self._epochs: int | None = None
        self._num_train = 0.0
        self._last_progress = 0.0
        self._last_poll = 0.0
        #: When the current epoch's first step started, and when its last step ended (monotonic).
        self._epoch_started = 0.0
        self._epoch_trained: float | None = None
        self._last_summary: dict[str, Any] = {}

    def _progress(self, progress: dict[str, int]) -> None:
        try:
            lifecycle.set_progress(self.job.id, self.job.attempt, progress, self.settings)
        except Exception:
            log.warning("could not store the progress of job %s; going on", self.job.id, exc_info=True)

    def on_train_begin(self, info: TrainInfo) -> None:
        self.start_epoch = info.start_epoch
        self._epochs = info.epochs
        # what one evaluation's training covers: a pass, or a round's share of one
        self._num_train = info.num_train / max(info.rounds_per_epoch, 1)
        self._epoch_started = time.monotonic()
        log.info(
            "job %s trains %s on %s (%s): %d train / %d validation samples, %d epochs of %d steps%s",
            self.job.id,
            info.base_model,
            info.device,
            info.precision,
            info.num_train,
            info.num_val,
            info.epochs,
            info.steps_per_epoch,
            f", resuming after epoch {info.start_epoch}" if info.start_epoch else "",
        )
        # Evaluations past the checkpoint (or all, when starting afresh) are redone now.
        lifecycle.drop_metric_points_after(self.job.id, self.job.attempt, info.start_epoch, self.settings)
        self._progress(
            {
                "epoch": info.start_epoch,
                "epochs": info.epochs,
                "step": info.start_step,
                "steps": info.total_steps,
            }
        )

    def on_step_end(self, progress: Progress) -> None:
        now = time.monotonic()
        epoch_end = progress.round_end
        if epoch_end:
            self._epoch_trained = now
        if epoch_end or now - self._last_progress >= PROGRESS_EVERY_SECONDS:
            self._last_progress = now
            self._progress(progress.as_dict())

    def _samples_per_s(self) -> float | None:
        """Training throughput of the epoch just evaluated (its steps only, validation excluded)."""
        if self._epoch_trained is None or self._epoch_trained <= self._epoch_started:
            return None
        return round(self._num_train / (self._epoch_trained - self._epoch_started), 2)

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        point = metrics.as_metric_point()
        rate = self._samples_per_s()
        self._last_summary = history.metric_summary(point)
        self._epoch_started, self._epoch_trained = time.monotonic(), None
        log.info(
            "job %s %s", self.job.id, history.epoch_message(point | {"samples_per_s": rate}, self._epochs)
        )
        for attempt in range(METRIC_WRITE_TRIES):
            try:
                if not lifecycle.add_metric_point(
                    self.job.id,
                    self.job.attempt,
                    point,
                    self.settings,
                    epochs=self._epochs,
                    samples_per_s=rate,
                ):
                    self.lost.set()
                break
            except Exception:
                if attempt + 1 == METRIC_WRITE_TRIES:
                    raise
                log.warning("could not store a metric point of job %s; retrying", self.job.id, exc_info=True)
                time.sleep(0.5 * (attempt + 1))
        if self.job.role == "trial" and not self.lost.is_set():
            self._ask_pruner(point["epoch"])

    def _ask_pruner(self, epoch: int) -> None:
        """A search trial: the sweep's pruner decides from this epoch's value whether it goes on.

        A database hiccup here lets the trial go on (it is then judged at its next epoch).
        """
        try:
            pruned = search.report(self.settings, self.job.id)
        except Exception:
            log.warning("could not ask the pruner about job %s; going on", self.job.id, exc_info=True)
            return
        if pruned:
            log.info("job %s: search trial pruned after epoch %d", self.job.id, epoch)
            self.stop_reason = "pruned"

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        # s3: stored with retries and backoff before the epoch counts as saved; when the storage
        # stays down the job fails with storage_unavailable (raised through training).
        self.settings.storage.save_checkpoint(self.job.id)
        summary = self._last_summary if self._last_summary.get("epoch") == epoch else {"epoch": epoch}
        try:
            if not lifecycle.record_checkpoint(self.job.id, self.job.attempt, summary, self.settings):
                self.lost.set()
        except Exception:
            log.warning("could not record the checkpoint of job %s; going on", self.job.id, exc_info=True)
        self._epoch_started = time.monotonic()  # the next epoch's clock starts after the checkpoint

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
