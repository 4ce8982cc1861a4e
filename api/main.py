"""The FastAPI application factory.

Importing this module must stay cheap: no torch, no CUDA, no model loading. Heavy
work happens lazily in the services that need it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from api.auth import Principal
from api.edge import EdgeMiddleware
from api.observability import Metrics, install_metrics
from api.openapi import install_problem_openapi
from api.problems import install_problem_handlers
from api.quotas import RateLimits
from api.routes import include_routers
from api.state import LOOKUP_MAX_ENTRIES, LOOKUP_TTL_S, AppState, app_state
from api.ttl_cache import TTLCache
from core.objects import sweep_partials
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Size the thread pool (`api_threads`) and remove the partial files a killed server left."""
    settings = app_state(app).settings
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    removed = await run_in_threadpool(sweep_partials, settings, "api")
    if removed:
        log.warning(
            "removed %d stale partial file(s), %d bytes",
            len(removed),
            sum(item.size_bytes for item in removed),
        )
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="aplserve",
        version="0.1.0",
        summary="Fine-tune multi-label classifiers with the Asymmetric Polynomial Loss family.",
        lifespan=_lifespan,
        # /docs and /redoc are served from vendored assets (api/apidocs), not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    metrics = Metrics(settings)
    app.state.aplserve = AppState(
        settings=settings,
        principals=TTLCache[Principal](settings.auth_cache_seconds),
        serving_lookups=TTLCache[Any](LOOKUP_TTL_S, LOOKUP_MAX_ENTRIES),
        metrics=metrics,
        rate_limits=RateLimits(settings),
        ingest_limiter=CapacityLimiter(settings.ingest_threads),
        send_limiter=CapacityLimiter(settings.broker_send_threads),
    )
    install_problem_handlers(app)
    include_routers(app)
    app.add_middleware(EdgeMiddleware, settings=settings)
    install_problem_openapi(app)
    install_metrics(app, metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location", "Idempotent-Replayed"],
        )
    return app
