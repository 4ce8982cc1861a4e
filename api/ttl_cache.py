"""A small thread-safe cache whose entries expire: what the hot request paths reuse.

Predict is called all day by the same few keys on the same few models; reading the
key row and the model row from the database on every call costs a round trip and
a thread-pool hop each, more than the rest of the request around a small model.
Entries live `ttl_s` seconds, so a change made by another process (a revoked key)
is seen within that time; `discard` makes a change made here visible at once.

`get_or_load` loads a missing key once however many requests miss it together: when
a busy key's entry expires, every request of that client in flight misses at the same
moment (32 keep-alive clients of one key: 32 database reads and commits at once, each
holding a route thread while the others queue behind them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl_s: float, max_entries: int = 1024) -> None:
        self.ttl_s = ttl_s
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, V]] = {}
        # (event loop, key) -> the load in flight; touched only from event-loop threads.
        self._loading: dict[tuple[int, Hashable], asyncio.Future[V]] = {}

    def get(self, key: Hashable) -> V | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._entries[key]
                return None
            return hit[1]

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, else the result of one `load` shared by every caller waiting on it.

        A load that raises is not cached: each waiting caller gets its exception.
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        if self.ttl_s <= 0:
            return await load()
        slot = (id(asyncio.get_running_loop()), key)
        pending = self._loading.get(slot)
        if pending is None:
            pending = asyncio.ensure_future(self._load(slot, key, load))
            pending.add_done_callback(_retrieve)
            self._loading[slot] = pending
        # shield: a caller that goes away (client disconnected) does not cancel the others' load
        return await asyncio.shield(pending)

    async def _load(self, slot: tuple[int, Hashable], key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await load()
            self.put(key, value)
            return value
        finally:
            self._loading.pop(slot, None)

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max:
                now = time.monotonic()
                self._entries = {k: hit for k, hit in self._entries.items() if hit[0] >= now}
                if len(self._entries) >= self._max:
                    self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _retrieve(future: asyncio.Future[object]) -> None:
    """Marks a failed load's exception as seen, for when every caller had gone away."""
    if not future.cancelled():
        future.exception()
