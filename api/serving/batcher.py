"""The inference threads of a loaded model, which merge concurrent requests into micro-batches.

Why dedicated threads: a forward pass holds the CPU (or GPU) for milliseconds to
seconds, so it must never run on the event loop, and a model thread is the natural
place to batch: while one batch runs, the requests that arrive queue up and the next
batch takes them all at once. A model has `instances` such threads on one queue, each
running whole forward passes on the shared weights. On a CPU, two passes with one
intra-op thread each do more work than one pass spread over two threads (small
matrix products parallelise poorly: measured 1.8x on two cores for batches of 16),
so the engine runs two instances there; on a GPU, one.

When the thread picks up a request it also takes every request already waiting, up
to `max_batch_size` inputs. If the batch is not full and more requests for this model
are on their way (they have entered the predict route but are still being read or
decoded; the engine counts them), it waits for them, at most `max_wait` from the
moment it started collecting. A request that nobody follows is therefore never held
back (one client sees no added latency), while under load the model thread gives
the CPU to the requests being parsed instead of running many tiny batches.
With batching off each request runs alone; with one instance too, one after the
other: the baseline the benchmark compares against.

Requests hand over a `concurrent.futures.Future` and are answered from this thread;
the event loop side awaits it with `asyncio.wrap_future`, so the batcher does not
care which event loop (or thread) a request came from. A request whose client went
away is cancelled and skipped. When a merged batch fails, each request is retried on
its own, so one bad request cannot fail the others it was batched with.

Every wait here ends: a collecting thread's waits are bounded by `max_wait`, and an
idle thread's wait is ended by the next request or by `close`, which queues one stop
per thread behind everything already queued (no request can be queued after it).
The queue is a `queue.Queue`, not a `queue.SimpleQueue`: on CPython 3.11 a timed
`SimpleQueue.get` that is woken by a `put` but loses the item to another consumer
(the other instance) recomputes a negative timeout, which its lock treats as "wait
forever"; the thread then sat on the batch it was collecting until some later
request arrived, and if none came (its model had just been evicted) those requests
were never answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: `predict(items, batch_size)` -> an array of shape (len(items), num_labels).
PredictFn = Callable[[Sequence[Any], int], Any]


@dataclass
class BatchRequest:
    items: Sequence[Any]
    future: Future[Any] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BatchPolicy:
    enabled: bool = True
    max_batch_size: int = 32
    max_wait_s: float = 0.005
    #: Forward passes run at once (threads on the one queue).
    instances: int = 1


class BatchStats:
    """Counts of what the batchers did (thread-safe); `observe` also feeds Prometheus when given."""

    def __init__(self, observe: Callable[[int, int, float], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._observe = observe
        self.batches = 0
        self.requests = 0
        self.items = 0
        self.max_requests_in_batch = 0
        #: requests merged into one forward pass -> how many batches had that many
        self.requests_per_batch: dict[int, int] = {}

    def record(self, requests: int, items: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.requests += requests
            self.items += items
            self.max_requests_in_batch = max(self.max_requests_in_batch, requests)
            self.requests_per_batch[requests] = self.requests_per_batch.get(requests, 0) + 1
        if self._observe is not None:
            self._observe(requests, items, seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batches": self.batches,
                "requests": self.requests,
                "items": self.items,
                "max_requests_in_batch": self.max_requests_in_batch,
                "requests_per_batch": dict(sorted(self.requests_per_batch.items())),
            }


_STOP = object()
#: How often a collecting batcher looks again at the number of requests on their way.
ARRIVAL_POLL_S = 0.0005


def _nobody() -> int:
    return 0


class ModelBatcher:
    """The inference threads of one loaded model."""

    def __init__(
        self,
        name: str,
        predict: PredictFn,
        policy: BatchPolicy,
        stats: BatchStats,
        arriving: Callable[[], int] = _nobody,
    ) -> None:
        self._predict = predict
        self._arriving = arriving
        self._policy = policy
        self._stats = stats
        # Not SimpleQueue: its timed get can block forever on 3.11 (see the module docstring).
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        #: Makes "closed?" and "queue it" one step, so no request can land behind the stops.
        self._submit_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"aplserve-model-{name}-{index}", daemon=True)
            for index in range(max(1, policy.instances))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, items: Sequence[Any]) -> Future[Any]:
        """Queue `items`; the future's result is their probabilities, in order."""
        request = BatchRequest(items)
        with self._submit_lock:
            if self._closed:
                raise RuntimeError("this model's batcher is closed")
            self._queue.put(request)
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Stop after the requests already queued have been answered."""
        with self._submit_lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._queue.put(_STOP)
        if timeout is not None and threading.current_thread() not in self._threads:
            deadline = time.monotonic() + timeout
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _collect(self, first: BatchRequest) -> tuple[list[BatchRequest], Any]:
        """`first` plus the requests that join it; also returns one request held over (or _STOP)."""
        batch, size = [first], len(first.items)
        if not self._policy.enabled:
            return batch, None
        deadline = time.monotonic() + self._policy.max_wait_s
        while size < self._policy.max_batch_size:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._arriving() <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=min(remaining, ARRIVAL_POLL_S))
                except queue.Empty:
                    continue
            if nxt is _STOP or size + len(nxt.items) > self._policy.max_batch_size:
                return batch, nxt
            batch.append(nxt)
            size += len(nxt.items)
        return batch, None

    def _run(self) -> None:
        held: Any = None
        while True:
            first = held if held is not None else self._queue.get()
            held = None
            if first is _STOP:
                return
            batch, held = self._collect(first)
            live = [request for request in batch if request.future.set_running_or_notify_cancel()]
            if live:
                self._execute(live)

    def _execute(self, requests: list[BatchRequest]) -> None:
        items = [item for request in requests for item in request.items]
        started = time.perf_counter()
        try:
            probabilities = self._predict(items, self._policy.max_batch_size)
        except BaseException as exc:
            if len(requests) == 1:
                requests[0].future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            log.warning("a merged batch of %d requests failed; retrying them one by one", len(requests))
            for request in requests:
                self._execute([request])
            return
        self._stats.record(len(requests), len(items), time.perf_counter() - started)
        offset = 0
        for request in requests:
            count = len(request.items)
            request.future.set_result(probabilities[offset : offset + count])
            offset += count
