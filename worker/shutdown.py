"""The process-wide "stop soon" flag that Celery's warm shutdown sets.

The running job sees it at its next training step, gives itself back to the queue
and the worker exits; the next worker resumes it from its last epoch checkpoint.
A thread-safe event, because the signal handler and the training loop share it.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()
