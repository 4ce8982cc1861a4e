"""The webhook signature: HMAC-SHA256 over "<timestamp>.<body>" with the owner's secret.

Signing the timestamp with the body lets a receiver reject a replayed call (an old
timestamp) without trusting an unsigned header. The scheme is the one Stripe and
GitHub users know: `X-Aplserve-Signature: sha256=<hex>`, `X-Aplserve-Timestamp: <unix s>`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-Aplserve-Signature"
TIMESTAMP_HEADER = "X-Aplserve-Timestamp"
EVENT_HEADER = "X-Aplserve-Event"
DELIVERY_HEADER = "X-Aplserve-Delivery"
SECRET_PREFIX = "whsec_"
#: A receiver accepts calls signed at most this long ago (or ahead, for clock skew).
DEFAULT_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(24)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the signature header for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature_header: str | None,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when the headers are a fresh, valid signature of `body` (the raw request bytes)."""
    if not timestamp or not signature_header or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    sent = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, sent, body), signature_header.strip())
