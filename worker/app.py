"""The worker's Celery app: the API's configuration plus the task and the lease sweeper.

`aplserve worker` and `python -m worker` run `main`; tests start it the same way in a
subprocess, so what runs in production is what the tests kill and restart.

One job per worker process: the task runs in the worker's main process (the solo
pool), so a warm shutdown (SIGTERM, Ctrl-C) reaches the training loop directly. It
stops at the next step, the job goes back to the queue and resumes from its last
epoch checkpoint on the next worker; a second signal is not needed. `--concurrency N`
starts N such processes and supervises them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any

from celery import Celery
from celery.exceptions import Reject, WorkerShutdown
from celery.signals import worker_ready, worker_shutting_down

from apl.threads import torch_threads_for
from core import workers
from core.broker import RUN_JOB_TASK, BrokerUnavailable, celery_app, worker_queues
from core.db.session import session_scope
from core.jobs import dispatch, lifecycle
from core.objects import sweep_partials
from core.settings import Settings, get_settings
from core.webhooks.notify import dispatch_due, notify_job_finished
from worker import shutdown

log = logging.getLogger(__name__)

#: Polling interval of the server-less (SQLAlchemy) transport: how soon an idle worker sees a job.
EMBEDDED_POLL_SECONDS = 0.25

_stop = threading.Event()
#: Set while a task body runs: a warm shutdown then waits for the job to stop at its next step.
_busy = threading.Event()
_supervisor_pid: int | None = None
#: What this worker announces (its devices) in the workers table; set by `run_worker`.
_identity: workers.WorkerInfo | None = None


def run_job_task(job_id: str) -> str:
    """Celery entry point; the body lives in `worker.runner` so it can be called directly.

    During a warm shutdown the consumer may still hand over one more message; it goes
    back to the queue untouched instead of being claimed and released at once.
    """
    from worker.runner import run_job

    _busy.set()
    try:
        if shutdown.requested():
            raise Reject("the worker is shutting down", requeue=True)
        return run_job(job_id, get_settings())
    finally:
        _busy.clear()


class ExpectedRejectFilter(logging.Filter):
    """Celery logs a rejected task with its traceback; a requeue at shutdown is expected, so one line.

    The record stays (`Task aplserve.run_job[...] reject requeue=True: the worker is
    shutting down`); only the traceback of our own Reject is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], Reject) and record.exc_info[1].requeue:
            record.exc_info = None
            record.exc_text = None
        return True


#: Where Celery logs what became of a task (celery.app.trace).
TRACE_LOGGER = "celery.app.trace"


def sweep_once(settings: Settings) -> lifecycle.SweepResult:
    """Take back jobs whose worker died, then make sure every queued job has a message
    and every due webhook is being sent (the outboxes, after a broker loss or a restart)."""
    from worker.runner import ACTIVE_JOBS

    result = lifecycle.sweep_expired(settings, exclude=set(ACTIVE_JOBS))
    for job_id in result.requeued:
        log.warning("job %s lost its worker; re-queued to resume from its last checkpoint", job_id)
    if result.requeued:
        try:
            with session_scope(settings) as session:
                dispatch.send(session, settings, result.requeued)
        except BrokerUnavailable as error:
            log.warning("could not send re-queued jobs (%s); the reconciler tries again", error)
    for job_id in result.failed:
        log.error("job %s lost its worker too many times; failed", job_id)
    for job_id in result.cancelled:
        log.info("job %s lost its worker while a cancel was pending; cancelled", job_id)
    for job_id in result.failed + result.cancelled:
        notify_job_finished(settings, job_id)
    _advance_searches(settings)
    reconciled = dispatch.reconcile(settings)
    if reconciled.error is not None and (reconciled.unsent or reconciled.lost):
        log.warning("%d queued job(s) wait for the broker: %s", len(reconciled.unsent), reconciled.error)
    dispatch_due(settings)
    if _identity is not None:  # still alive, and busy with this job or idle
        workers.announce(settings, _identity, next(iter(ACTIVE_JOBS), None))
    return result


def _advance_searches(settings: Settings) -> None:
    """Search sweeps with room for more trials (their last trial's worker died before advancing
    them, or the lease sweep failed a trial): ask for the next trials or start the replicates."""
    from core.sweeps import search

    for sweep_id in search.waiting_sweeps(settings):
        try:
            search.advance(settings, sweep_id)
        except Exception:
            log.warning("could not advance the search of sweep %s; next pass", sweep_id, exc_info=True)


def sweep_interval(settings: Settings) -> float:
    return workers.sweep_seconds(settings)


def _sweep_forever(settings: Settings) -> None:
    interval = sweep_interval(settings)
    while not _stop.is_set():
        try:
            sweep_once(settings)
        except Exception:  # a database hiccup must not kill the sweeper
            log.exception("lease sweep failed; trying again in %.0f s", interval)
        _stop.wait(interval)


def _watch_supervisor(pid: int) -> None:
    """Shut down when the supervising process (`aplserve serve`) is gone, instead of living on orphaned."""
    while not _stop.wait(1.0):
        if os.getppid() != pid:
            log.warning("the supervising process %d is gone; shutting down", pid)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _install_idle_fast_shutdown() -> None:
    """Make a warm shutdown of an idle worker immediate.

    Celery's handler only sets a flag that its consumer loop checks after its next
    poll (up to a few seconds on the polling transport). When no task runs, nothing
    is lost by leaving the loop at once, the same way Celery itself leaves it.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        celery_handler = signal.getsignal(signum)
        if not callable(celery_handler):
            continue

        def handler(sig: int, frame: FrameType | None, _celery: Any = celery_handler) -> None:
            _celery(sig, frame)
            if not _busy.is_set():
                raise WorkerShutdown(0)

        signal.signal(signum, handler)


def _on_ready(sender: Any = None, **_: object) -> None:
    settings = get_settings()
    _stop.clear()
    transport = getattr(getattr(sender, "connection", None), "transport", None)
    if transport is not None and getattr(transport, "polling_interval", None) is not None:
        transport.polling_interval = min(transport.polling_interval, EMBEDDED_POLL_SECONDS)
    _install_idle_fast_shutdown()
    if _identity is not None:
        workers.announce(settings, _identity)
    threading.Thread(target=_sweep_forever, args=(settings,), name="lease-sweeper", daemon=True).start()
    if _supervisor_pid is not None:
        threading.Thread(
            target=_watch_supervisor, args=(_supervisor_pid,), name="supervisor-watch", daemon=True
        ).start()
    devices = f", {_identity.device_count} {_identity.device_kind} device(s)" if _identity else ""
    log.info("aplserve worker ready (queue %s, pid %d%s)", settings.queue_name, os.getpid(), devices)


def _on_shutting_down(**_: object) -> None:
    shutdown.request()
    _stop.set()


def build_worker_app(settings: Settings | None = None) -> Celery:
    app = celery_app(settings)
    if RUN_JOB_TASK not in app.tasks:
        app.task(name=RUN_JOB_TASK, ignore_result=True)(run_job_task)
    return app


def _preload() -> None:
    """Import the training stack now, so a job's time is spent training.

    transformers imports its model code lazily on first use, which costs seconds on
    a small machine; BERT's (the built-in MiniLM encoder is one) is worth loading ahead.
    """
    started = time.monotonic()
    import apl.artifacts
    import apl.training  # noqa: F401

    for module in (
        "transformers.models.auto.modeling_auto",
        "transformers.models.auto.tokenization_auto",
        "transformers.models.bert.modeling_bert",
        "transformers.models.bert.tokenization_bert",
    ):
        try:
            importlib.import_module(module)
        except ImportError:  # another transformers layout: the first job imports what it needs
            log.debug("could not preload %s", module, exc_info=True)
    log.info("training stack imported in %.1f s", time.monotonic() - started)


def _configure_threads(threads: int | None) -> None:
    """Give torch this process's share of the cores (apl.threads says why it is not torch's default)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    log.info("training with %d torch thread(s)", torch.get_num_threads())


def _announce_devices(settings: Settings) -> list[str]:
    """Learn this worker's devices, remember how it announces them; the queues it consumes."""
    global _identity
    from worker.devices import local_devices

    devices = local_devices(settings)
    host = socket.gethostname()
    _identity = workers.WorkerInfo(
        f"aplserve-{os.getpid()}@{host}", host, os.getpid(), devices.kind, devices.count
    )
    return worker_queues(settings, devices.count)


def run_worker(
    loglevel: str = "INFO", supervisor_pid: int | None = None, torch_threads: int | None = None
) -> None:
    """Run one Celery worker that consumes the configured queue and runs one job at a time."""
    global _supervisor_pid
    _supervisor_pid = supervisor_pid
    settings = get_settings()
    removed = sweep_partials(settings, "worker")
    if removed:
        log.warning("removed %d stale partial file(s) at start", len(removed))
    _preload()
    _configure_threads(torch_threads or torch_threads_for(1, settings.worker_torch_threads))
    logging.getLogger(TRACE_LOGGER).addFilter(ExpectedRejectFilter())
    queues = _announce_devices(settings)
    app = build_worker_app(settings)
    worker_ready.connect(_on_ready, weak=False)
    worker_shutting_down.connect(_on_shutting_down, weak=False)
    try:
        app.worker_main(
            [
                "worker",
                f"--loglevel={loglevel}",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={','.join(queues)}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--hostname={_identity.id if _identity else f'aplserve-{os.getpid()}@%h'}",
            ]
        )
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:
        code = 0
    if _identity is not None:
        with contextlib.suppress(Exception):  # the row goes stale by itself if the database is away
            workers.withdraw(settings, _identity.id)
    # Celery has stopped and every job state is committed; skip the interpreter's slow
    # teardown of torch and friends (seconds) so a stop is quick.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_processes(concurrency: int, loglevel: str = "INFO") -> None:
    """Run `concurrency` single-job worker processes until SIGTERM / Ctrl-C, then stop them all."""
    from worker.supervisor import EmbeddedWorker, stop_all

    stop = threading.Event()

    def _request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    threads = torch_threads_for(concurrency, get_settings().worker_torch_threads)
    workers = [EmbeddedWorker(loglevel=loglevel, torch_threads=threads) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    while not stop.wait(1.0):
        pass
    stop_all(workers)


def main(
    concurrency: int = 1,
    loglevel: str = "INFO",
    supervisor_pid: int | None = None,
    torch_threads: int | None = None,
) -> None:
    if concurrency > 1:
        run_processes(concurrency, loglevel)
    else:
        run_worker(loglevel, supervisor_pid, torch_threads)
