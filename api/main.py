"""The FastAPI application factory.

Importing this module must stay cheap: no torch, no CUDA, no model loading. Heavy
work happens lazily in the services that need it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.auth import Principal
from api.observability import Metrics, install_metrics
from api.openapi import install_problem_openapi
from api.problems import install_problem_handlers
from api.routes import include_routers
from api.state import LOOKUP_MAX_ENTRIES, LOOKUP_TTL_S, AppState
from api.ttl_cache import TTLCache
from core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="aplserve",
        version="0.1.0",
        summary="Fine-tune multi-label classifiers with the Asymmetric Polynomial Loss family.",
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
    )
    install_problem_handlers(app)
    include_routers(app)
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
