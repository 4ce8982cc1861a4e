"""Per-owner quotas (active jobs, dataset bytes) and request rates (writes, predict).

Quotas are counted in the database inside the transaction that adds the job or the
dataset, after its row is flushed and with the owner's row locked (PostgreSQL; SQLite
has one writer at a time anyway), so two requests at once cannot both slip under the
limit. Over a quota: 429 `quota_exceeded` with `limit` and `used` in the body.

Rates use the `limits` library (a sliding-window counter per owner and kind): its
Redis storage in full mode, so every API process shares the counters, and process
memory in embedded mode. Over a rate: 429 `rate_limited` with `Retry-After`. A
counter store that fails or hangs must not take the API down with it, so a check
that does not answer within STORAGE_TIMEOUT_SECONDS lets the request through and the
checks pause for STORAGE_BACKOFF_SECONDS (logged).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import Dataset, Job, Owner
from core.errors import AppError
from core.jobs.status import ACTIVE_STATUSES
from core.settings import Settings

log = logging.getLogger(__name__)

STORAGE_TIMEOUT_SECONDS = 0.5
STORAGE_BACKOFF_SECONDS = 5.0
KEY_PREFIX = "aplserve-limits"


def _exceeded(what: str, limit: int, used: int, unit: str) -> AppError:
    return AppError(
        429,
        "quota_exceeded",
        f"{what}: the limit is {limit}{unit} per owner and {used}{unit} are in use",
        extra={"limit": limit, "used": used},
    )


def lock_owner(session: Session, owner_id: str) -> None:
    """Serialise the quota checks of one owner (FOR UPDATE on PostgreSQL; SQLite has one writer).

    Taken before the new row is inserted: the insert's foreign-key check share-locks the
    owner row, and two requests that took that share lock first would deadlock here.
    """
    session.execute(select(Owner.id).where(Owner.id == owner_id).with_for_update())


def _active_jobs(session: Session, owner_id: str) -> int:
    count = session.scalar(
        select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE_STATUSES))
    )
    return int(count or 0)


def check_active_jobs(session: Session, owner_id: str, settings: Settings) -> None:
    """After the new job is flushed (and `lock_owner`): 429 when the owner now has too many active."""
    limit = settings.quota_active_jobs
    active = _active_jobs(session, owner_id) if limit else 0
    if limit and active > limit:
        raise _exceeded("too many queued and running jobs", limit, active - 1, "")


def check_room_for_jobs(session: Session, owner_id: str, settings: Settings, wanted: int) -> None:
    """Before a sweep inserts its children: 429 unless all `wanted` jobs fit under the quota.

    Checked up front so a sweep that cannot run whole is refused at once instead of
    leaving some children queued; each child is still counted again as it is added.
    """
    limit = settings.quota_active_jobs
    active = _active_jobs(session, owner_id) if limit else 0
    if limit and active + wanted > limit:
        raise _exceeded(
            f"a sweep of {wanted} jobs does not fit in the queued and running jobs", limit, active, ""
        )


def dataset_bytes_used(session: Session, owner_id: str) -> int:
    total = session.scalar(select(func.sum(Dataset.size_bytes)).where(Dataset.owner_id == owner_id))
    return int(total or 0)


def check_dataset_bytes(
    session: Session, owner_id: str, settings: Settings, adding: int, *, counted: bool = False
) -> None:
    """429 when the owner's stored datasets plus `adding` bytes pass the storage quota.

    `counted`: the new dataset's row is already flushed, so its bytes are in the sum.
    """
    limit = settings.quota_dataset_bytes
    if not limit:
        return
    stored = dataset_bytes_used(session, owner_id) - (adding if counted else 0)
    if stored + adding > limit:
        raise _exceeded("dataset storage is full for this owner", limit, stored, " bytes")


def _item(text: str) -> RateLimitItem | None:
    return parse(text) if text.strip() else None


def storage_url(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    broker = settings.resolved_broker_url
    if broker.startswith(("redis://", "rediss://")):
        return "async+" + broker
    return "async+memory://"


class RateLimits:
    """The request rates of one app; the limiter is made on first use, inside the event loop."""

    def __init__(self, settings: Settings) -> None:
        self.items = {
            "writes": _item(settings.rate_limit_writes),
            "predict": _item(settings.rate_limit_predict),
        }
        self.url = storage_url(settings)
        self._limiter: SlidingWindowCounterRateLimiter | None = None
        self._paused_until = 0.0

    def _get(self) -> SlidingWindowCounterRateLimiter:
        if self._limiter is None:
            options: dict[str, Any] = {}
            if "redis" in self.url:
                options = {
                    "implementation": "redispy",
                    "key_prefix": KEY_PREFIX,
                    "socket_timeout": STORAGE_TIMEOUT_SECONDS,
                    "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
                }
            self._limiter = SlidingWindowCounterRateLimiter(storage_from_string(self.url, **options))
        return self._limiter

    async def check(self, kind: str, owner_id: str) -> None:
        """Count one request of `kind` for the owner; 429 `rate_limited` when over the rate."""
        item = self.items.get(kind)
        if item is None or time.monotonic() < self._paused_until:
            return
        limiter = self._get()
        try:
            allowed = await asyncio.wait_for(limiter.hit(item, kind, owner_id), STORAGE_TIMEOUT_SECONDS)
            if allowed:
                return
            stats = await asyncio.wait_for(
                limiter.get_window_stats(item, kind, owner_id), STORAGE_TIMEOUT_SECONDS
            )
        except Exception as error:  # includes TimeoutError: fail open, but say so
            self._paused_until = time.monotonic() + STORAGE_BACKOFF_SECONDS
            log.warning(
                "rate-limit storage unavailable (%s); not limiting for %.0f s", error, STORAGE_BACKOFF_SECONDS
            )
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise AppError(
            429,
            "rate_limited",
            f"too many {kind} requests: at most {item} per owner; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            extra={"limit": str(item)},
        )


def request_kind(method: str, path: str) -> str | None:
    """Which rate a request counts against: predict, writes (changes), or none (reads)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    return "predict" if path.endswith("/predict") else "writes"
