"""`python -m worker.launcher`: torch's launcher (`torch.distributed.run`) for one job's ranks.

The worker starts this process for a job on N devices; it runs torchrun's elastic agent
(standalone rendezvous on a free port, no restarts: a failed rank ends the group and
the job is retried from its checkpoint the way any worker loss is). The agent stops
every rank when one fails or when it gets SIGTERM (SIGTERM, then SIGKILL after its
grace period). Two watchers make sure nothing is left behind: this process stops the
group when the worker that started it is gone, and each rank exits when this process
is gone (`watch_parent`), so no rank outlives its launcher even after a SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

#: How often a launcher or a rank checks that its parent is still there.
PARENT_POLL_SECONDS = 0.5


def watch_parent(on_gone: Callable[[], None]) -> threading.Thread:
    """Call `on_gone` (in a daemon thread) once this process's parent has exited."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        on_gone()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def _stop_self() -> None:
    """The agent turns SIGTERM into stopping every rank before it exits."""
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    from torch.distributed.run import main as torchrun

    watch_parent(_stop_self)
    torchrun(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
