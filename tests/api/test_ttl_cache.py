"""TTLCache: entries expire, `discard` drops one at once, the size stays bounded, ttl 0 caches nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from api import ttl_cache
from api.ttl_cache import TTLCache


def test_an_entry_lives_its_ttl_then_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cache's own clock, moved by hand: a busy machine can pause a test longer than any TTL.
    now = [1000.0]
    monkeypatch.setattr(ttl_cache, "time", SimpleNamespace(monotonic=lambda: now[0]))
    cache = TTLCache[str](ttl_s=0.05)
    cache.put("k", "v")
    now[0] += 0.04
    assert cache.get("k") == "v"
    now[0] += 0.02
    assert cache.get("k") is None
    assert len(cache) == 0


def test_discard_and_clear_take_effect_at_once() -> None:
    cache = TTLCache[int](ttl_s=60)
    cache.put(("owner", "a"), 1)
    cache.put(("owner", "b"), 2)
    cache.discard(("owner", "a"))
    assert cache.get(("owner", "a")) is None
    assert cache.get(("owner", "b")) == 2
    cache.clear()
    assert cache.get(("owner", "b")) is None


def test_size_is_bounded_and_expired_entries_go_first() -> None:
    cache = TTLCache[int](ttl_s=60, max_entries=3)
    for index in range(10):
        cache.put(index, index)
        assert len(cache) <= 3
    assert cache.get(9) == 9


def test_a_zero_ttl_caches_nothing() -> None:
    cache = TTLCache[str](ttl_s=0)
    cache.put("k", "v")
    assert cache.get("k") is None
    assert len(cache) == 0


def test_callers_that_miss_together_share_one_load_and_a_failed_load_is_not_kept() -> None:
    cache = TTLCache[str](ttl_s=60)
    loads: list[str] = []

    async def load() -> str:
        loads.append("read")
        await asyncio.sleep(0.01)  # the database read, while more callers arrive
        return "principal"

    async def refused() -> str:
        loads.append("refused")
        raise PermissionError("the API key is not valid")

    async def scenario() -> None:
        assert await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(32))) == ["principal"] * 32
        assert await cache.get_or_load("k", load) == "principal"  # cached now: no further load
        results = await asyncio.gather(
            *(cache.get_or_load("bad", refused) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(result, PermissionError) for result in results)
        with pytest.raises(PermissionError):
            await cache.get_or_load("bad", refused)  # tried again: an error is never cached

    asyncio.run(scenario())
    assert loads == ["read", "refused", "refused"]


def test_a_caller_that_goes_away_does_not_cancel_the_load_of_the_others() -> None:
    cache = TTLCache[str](ttl_s=60)

    async def load() -> str:
        await asyncio.sleep(0.02)
        return "principal"

    async def scenario() -> None:
        leaver = asyncio.ensure_future(cache.get_or_load("k", load))
        stayer = asyncio.ensure_future(cache.get_or_load("k", load))
        await asyncio.sleep(0.005)
        leaver.cancel()  # its client disconnected
        assert await stayer == "principal"
        assert leaver.cancelled() and cache.get("k") == "principal"

    asyncio.run(scenario())
