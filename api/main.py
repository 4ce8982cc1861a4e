"""The FastAPI application factory.

Importing this module must stay cheap: no torch, no CUDA, no model loading. Heavy
work happens lazily in the services that need it.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.problems import install_problem_handlers
from api.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="aplserve",
        version="0.1.0",
        summary="Fine-tune multi-label classifiers with the Asymmetric Polynomial Loss family.",
    )
    app.state.settings = settings
    install_problem_handlers(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app
