"""Sending one webhook call: signed POST, bounded retries with exponential backoff.

A call counts as delivered on any 2xx answer; no answer, 408, 429 and 5xx are
retried; any other answer is final (the receiver said no). Redirects are not
followed, so a call only ever goes to the URL the job named. `attempt` makes one
POST; `deliver` retries in memory. The service's job webhooks go through the durable
outbox instead (core.webhooks.outbox and notify), which makes the same attempts but
keeps each one in the database, so a restart resumes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from core.webhooks.destinations import refusal
from core.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
TIMEOUT_SECONDS = 10.0
USER_AGENT = "aplserve-webhooks/1"


@dataclass(frozen=True)
class Delivery:
    """One event for one URL; `id` stays the same across retries so receivers can deduplicate."""

    id: str
    url: str
    event: str
    body: bytes
    secret: str = field(repr=False)
    #: Whether the URL may lead to loopback, private or link-local addresses (core.webhooks.destinations).
    allow_private: bool = False


@dataclass(frozen=True)
class Attempt:
    status: int | None
    error: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: list[Attempt]


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def backoff_seconds(attempt: int, first: float = FIRST_BACKOFF_SECONDS) -> float:
    """The wait after failed attempt number `attempt` (1-based): first, 2*first, 4*first, ... capped."""
    return float(min(first * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def headers_for(delivery: Delivery, attempt: int, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: delivery.id,
        "X-Aplserve-Attempt": str(attempt),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(delivery.secret, timestamp, delivery.body),
    }


def attempt(client: httpx.Client, delivery: Delivery, number: int) -> tuple[Attempt, bool]:
    """Make attempt `number` (1-based) of a delivery; (what happened, whether it ends the delivery).

    An attempt whose URL leads to a non-public address (unless allowed) is not made
    and ends the delivery.
    """
    refused = None if delivery.allow_private else refusal(delivery.url)
    if refused is not None:
        return Attempt(None, f"refused: {refused}"), True
    try:
        response = client.post(
            delivery.url, content=delivery.body, headers=headers_for(delivery, number, int(time.time()))
        )
    except httpx.HTTPError as error:
        return Attempt(None, f"{type(error).__name__}: {error}"), False
    status = response.status_code
    return Attempt(status), 200 <= status < 300 or not _retryable(status)


def http_client(timeout: float = TIMEOUT_SECONDS) -> httpx.Client:
    return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)


def deliver(
    delivery: Delivery,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    first_backoff: float = FIRST_BACKOFF_SECONDS,
    timeout: float = TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """POST until a 2xx, a final refusal or `max_attempts`; each attempt is signed afresh."""
    attempts: list[Attempt] = []
    with http_client(timeout) as client:
        for number in range(1, max_attempts + 1):
            made, final = attempt(client, delivery, number)
            attempts.append(made)
            if made.status is not None and 200 <= made.status < 300:
                return DeliveryResult(True, attempts)
            if final or number == max_attempts:
                break
            sleep(backoff_seconds(number, first_backoff))
    return DeliveryResult(False, attempts)
