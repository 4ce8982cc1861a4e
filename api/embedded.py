"""The embedded worker: one worker process that `aplserve serve` starts and supervises.

It runs as a separate process (`python -m worker`), not a thread, so training never
blocks the API's event loop and a crash of one cannot take the other down. If it
dies it is started again (with a growing delay), and the lease sweeper in the new
process takes back the job the old one was running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0
MAX_RESTART_DELAY_SECONDS = 30.0


class EmbeddedWorker:
    """Keeps one worker process alive until `stop()`."""

    def __init__(self, concurrency: int = 1) -> None:
        self._command = [sys.executable, "-m", "worker", f"--concurrency={concurrency}"]
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="embedded-worker", daemon=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            # Its own process group, so stopping it also stops the pool's child processes.
            self._process = subprocess.Popen(self._command, start_new_session=True)
            log.info("embedded worker started (pid %d)", self._process.pid)
            code = self._process.wait()
            if self._stopping.is_set():
                return
            log.error("embedded worker exited with code %s; restarting in %.0f s", code, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM lets the current step finish), then SIGKILL after a grace period."""
        self._stopping.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker did not stop in %.0f s; killing it", STOP_GRACE_SECONDS)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
        self._thread.join(timeout=1)
