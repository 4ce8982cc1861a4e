"""Everything an app holds between requests, in one typed object made by `create_app`.

FastAPI's `app.state` is an untyped bag; keeping one `AppState` on it (and reading it
only through `app_state`) means every piece of per-app state is declared here, with
its type, and a test can build several apps in one process that share nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anyio import CapacityLimiter
from fastapi import FastAPI

from api.ttl_cache import TTLCache
from core.settings import Settings

if TYPE_CHECKING:
    from api.auth import Principal
    from api.observability import Metrics
    from api.quotas import RateLimits
    from api.serving.engine import ServingEngine
    from api.serving.state import ServingMetrics

#: How long a model's registry entry is reused by predict without reading the database again.
LOOKUP_TTL_S = 30.0
LOOKUP_MAX_ENTRIES = 1024


@dataclass
class AppState:
    settings: Settings
    #: Accepted API keys, reused for `auth_cache_seconds` (a revoked key stops within that).
    principals: TTLCache[Principal]
    #: (owner id, model id) -> what predict needs of the Model row (rows never change).
    serving_lookups: TTLCache[Any]
    metrics: Metrics
    #: Request rates per owner (writes, predict); api/quotas.py.
    rate_limits: RateLimits
    #: Bounds the threads that ingest uploads (`ingest_threads`), apart from the routes' own.
    ingest_limiter: CapacityLimiter
    #: Bounds the threads that wait on the broker for POST /v1/jobs (`broker_send_threads`).
    send_limiter: CapacityLimiter
    #: Made by the models router's lifespan (or on first use); closed at shutdown.
    serving: ServingEngine | None = None
    serving_metrics: ServingMetrics | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def app_state(app: FastAPI) -> AppState:
    state = app.state.aplserve
    assert isinstance(state, AppState), "the app was not made by api.main.create_app"
    return state
