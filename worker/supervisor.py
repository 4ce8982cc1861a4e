"""The embedded worker: one worker process that `aplserve serve` starts and supervises.

It runs as a separate process (`python -m worker`), not a thread, so training never
blocks the API's event loop and a crash of one cannot take the other down. If it
dies it is started again (with a growing delay), and the lease sweeper in the new
process takes back the job the old one was running. The worker watches this
process too and shuts itself down when it is gone, so it is never left orphaned.

Stopping is a warm shutdown: SIGTERM makes the running job stop at its next step
and go back to the queue (it resumes from its last epoch checkpoint on the next
start); only a worker that does not exit within the grace period is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0
MAX_RESTART_DELAY_SECONDS = 30.0
#: A worker that ran this long before dying is restarted without delay growth.
HEALTHY_RUN_SECONDS = 60.0


class EmbeddedWorker:
    """Keeps one worker process alive until `stop()`."""

    def __init__(self, loglevel: str = "INFO", torch_threads: int | None = None) -> None:
        self._command = [
            sys.executable,
            "-m",
            "worker",
            "--concurrency=1",
            f"--loglevel={loglevel}",
            f"--supervisor-pid={os.getpid()}",
            *([f"--torch-threads={torch_threads}"] if torch_threads is not None else []),
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="embedded-worker", daemon=True)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                # Its own session, so a terminal's Ctrl-C reaches only `serve`, which then
                # stops the worker in order; and stopping the group stops all it started.
                self._process = subprocess.Popen(self._command, start_new_session=True)
            log.info("embedded worker started (pid %d)", self._process.pid)
            started = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > HEALTHY_RUN_SECONDS:
                delay = 1.0
            log.error("embedded worker exited with code %s; restarting in %.0f s", code, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)

    def request_stop(self) -> None:
        """Begin a warm shutdown (SIGTERM); `wait()` finishes it."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)

    def wait(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Wait for the worker to exit; kill it when it takes longer than `grace` seconds."""
        process = self._process
        if process is not None:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("embedded worker did not stop in %.0f s; killing it", grace)
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=1)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Warm shutdown (the running job stops at its next step), then SIGKILL after `grace`."""
        self.request_stop()
        self.wait(grace)


def stop_all(workers: Sequence[EmbeddedWorker], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop several workers at once (they all get SIGTERM before any is waited for)."""
    for worker in workers:
        worker.request_stop()
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.wait(max(0.0, deadline - time.monotonic()))


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
