"""The worker's Celery app: the API's configuration plus the task and the lease sweeper.

`aplserve worker` runs `worker_main` on this app; tests start it the same way in a
subprocess, so what runs in production is what the tests kill and restart.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from api.broker import RUN_JOB_TASK, celery_app, enqueue_job
from api.settings import Settings, get_settings
from worker import state

log = logging.getLogger(__name__)

_sweeper_stop = threading.Event()


def run_job_task(job_id: str) -> str:
    """Celery entry point; the body lives in `worker.runner` so it can be called directly."""
    from worker.runner import run_job

    return run_job(job_id, get_settings())


def sweep_once(settings: Settings) -> state.SweepResult:
    """Re-queue (and re-send) jobs whose worker died, fail those out of attempts."""
    result = state.sweep_expired(settings)
    for job_id in result.requeued:
        log.warning("job %s lost its worker; re-queued to resume from its last checkpoint", job_id)
        enqueue_job(job_id, settings)
    for job_id in result.failed:
        log.error("job %s lost its worker too many times; failed", job_id)
    return result


def _sweep_forever(settings: Settings) -> None:
    interval = max(1.0, settings.job_lease_seconds / 4)
    while not _sweeper_stop.is_set():
        try:
            sweep_once(settings)
        except Exception:  # a database hiccup must not kill the sweeper
            log.exception("lease sweep failed; trying again in %.0f s", interval)
        _sweeper_stop.wait(interval)


def _start_sweeper(**_: object) -> None:
    _sweeper_stop.clear()
    threading.Thread(target=_sweep_forever, args=(get_settings(),), name="lease-sweeper", daemon=True).start()


def _stop_sweeper(**_: object) -> None:
    _sweeper_stop.set()


def build_worker_app(settings: Settings | None = None) -> Celery:
    app = celery_app(settings)
    if RUN_JOB_TASK not in app.tasks:
        app.task(name=RUN_JOB_TASK, ignore_result=True)(run_job_task)
    return app


def main(concurrency: int = 1, loglevel: str = "INFO") -> None:
    """Run a worker that consumes the configured queue, one job per child process."""
    settings = get_settings()
    app = build_worker_app(settings)
    worker_ready.connect(_start_sweeper, weak=False)
    worker_shutting_down.connect(_stop_sweeper, weak=False)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency}",
            f"--queues={settings.queue_name}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=aplserve-{os.getpid()}@%h",
        ]
    )
