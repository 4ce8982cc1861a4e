"""How many CPU threads torch may use in one process, so that processes sharing cores do not fight.

torch starts one intra-op thread per core in every process. Two processes that each train
or serve on every core run twice as many threads as there are cores, and the threads of
one operation wait for each other at every step: on the project's 2-core machine a
6-epoch job took 5.5 min with torch's default beside other work and 40 s with one thread
(docs/results.md, "Threads on a shared CPU"). So the worker and the serving engine give
each process its share of the cores instead.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_of_cores(processes: int, cores: int | None = None) -> int:
    """Threads for one of `processes` that run at once on `cores` (default: this process's): at least 1."""
    return max(1, (available_cores() if cores is None else cores) // max(1, processes))


def torch_threads_for(processes: int, configured: int | None) -> int | None:
    """Threads for one of `processes` training side by side, or None to leave torch's own choice.

    A configured value wins; an `OMP_NUM_THREADS` in the environment is the operator's own
    choice too, which torch already follows, so it is left alone.
    """
    if configured is not None:
        return configured
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return share_of_cores(processes)
