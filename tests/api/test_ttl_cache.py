"""TTLCache: entries expire, `discard` drops one at once, the size stays bounded, ttl 0 caches nothing."""

from __future__ import annotations

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
