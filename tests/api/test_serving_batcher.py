"""The batcher's threads on their own (no HTTP, no model): every queued request is answered."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest

from api.serving.batcher import BatchPolicy, BatchStats, ModelBatcher

#: How long a request may take to be answered before the test calls it lost (it is answered
#: in milliseconds; a lost one is never answered, so this only bounds how long a failure takes).
ANSWER_DEADLINE_S = 20.0
#: How long the race is provoked for.
STRESS_S = 6.0


def _echo(items: Sequence[Any], batch_size: int) -> list[Any]:
    return list(items)


@pytest.fixture
def contended_gil() -> Iterator[None]:
    """Threads switched every 10 us and six busy threads wanting the GIL: what a loaded
    machine does to the batcher's threads, so that their races happen in seconds, not hours."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(6)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        stop.set()
        sys.setswitchinterval(previous)
        for spinner in spinners:
            spinner.join(timeout=10)


def _answered(futures: list[Future[Any]]) -> list[Any]:
    return [future.result(timeout=ANSWER_DEADLINE_S) for future in futures]


def test_a_collecting_instance_never_sits_on_its_batch(contended_gil: None) -> None:
    """Regression: with two instances, one polls the queue (timed gets) while collecting a
    batch and the other takes requests as they come. On CPython 3.11 a timed
    `SimpleQueue.get` woken by a put whose item the other instance took first waited
    forever, holding the batch it was collecting: those requests were never answered
    (test_lru_eviction_during_inflight_requests_fails_none hung on a loaded machine).
    Small bursts, each awaited before the next, until a time budget is spent; every
    request must get its own answer. A stress test: on the old queue it failed in about
    two runs out of three (the hang is a race), on the new one it has not failed."""
    batcher = ModelBatcher("race", _echo, BatchPolicy(True, 4, 0.002, 2), BatchStats(), lambda: 1)
    budget = time.monotonic() + STRESS_S
    bursts = 0
    try:
        while time.monotonic() < budget:
            items = [(bursts, k) for k in range(1 + bursts % 3)]
            futures = [batcher.submit([item]) for item in items]
            assert _answered(futures) == [[item] for item in items], f"burst {bursts}"
            bursts += 1
    finally:
        batcher.close(timeout=10)
    assert bursts > 0 and not batcher.alive


def test_close_answers_everything_queued_and_refuses_more() -> None:
    """close() stops the threads only after the requests queued before it; a submit after
    close fails at once instead of queueing behind the stops (where nobody would answer it)."""
    gate = threading.Event()

    def held(items: Sequence[Any], batch_size: int) -> list[Any]:
        assert gate.wait(ANSWER_DEADLINE_S)
        return list(items)

    batcher = ModelBatcher("close", held, BatchPolicy(False, 4, 0.0, 2), BatchStats())
    futures = [batcher.submit([index]) for index in range(5)]
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["late"])
    gate.set()
    assert _answered(futures) == [[index] for index in range(5)]
    batcher.close(timeout=10)
    assert not batcher.alive
