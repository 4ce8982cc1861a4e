"""Running test calls at once without a wait that can last forever.

A `ThreadPoolExecutor` in a test joins its threads when its block ends, however it
ends: one call that never returns (a request nobody answers) then holds the test,
and, because its threads are not daemons, the interpreter at exit too, where no
per-test timeout reaches. `call_concurrently` waits for its calls up to a deadline
and fails with the stacks of the calls still running.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

A = TypeVar("A")
R = TypeVar("R")


def _stacks(threads: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    parts = []
    for thread in threads:
        frame = frames.get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
        parts.append(f"--- {thread.name}\n{stack}")
    return "".join(parts)


def call_concurrently(fn: Callable[[A], R], args: Sequence[A], timeout: float) -> list[R]:
    """`fn(arg)` for every arg, all at once (a daemon thread each); the results in order.

    Waits `timeout` seconds in all. A call still running then fails the test, with the
    stacks of the threads still inside; an exception raised by a call is raised here.
    """
    results: list[R | None] = [None] * len(args)
    errors: list[BaseException | None] = [None] * len(args)

    def run(index: int, arg: A) -> None:
        try:
            results[index] = fn(arg)
        except BaseException as exc:
            errors[index] = exc

    threads = [
        threading.Thread(target=run, args=(index, arg), name=f"concurrent-call-{index}", daemon=True)
        for index, arg in enumerate(args)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    running = [thread for thread in threads if thread.is_alive()]
    if running:
        raise AssertionError(
            f"{len(running)} of {len(threads)} calls still running after {timeout:.0f} s:\n{_stacks(running)}"
        )
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]
