"""TTLCache: entries expire, `discard` drops one at once, the size stays bounded, ttl 0 caches nothing."""

from __future__ import annotations

import time

from api.ttl_cache import TTLCache


def test_an_entry_lives_its_ttl_then_expires() -> None:
    cache = TTLCache[str](ttl_s=0.05)
    cache.put("k", "v")
    assert cache.get("k") == "v"
    time.sleep(0.06)
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
