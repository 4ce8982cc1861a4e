"""HTTP routers; `include_routers` mounts them all on an app."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    from api import apidocs, dashboard
    from api.apidocs import problems
    from api.routes import base_models, datasets, health, jobs, models, sweeps, webhooks, workers

    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(sweeps.router)
    app.include_router(base_models.router)
    app.include_router(models.router)
    app.include_router(webhooks.router)
    app.include_router(workers.router)
    app.include_router(dashboard.router)
    app.include_router(apidocs.router)
    app.include_router(problems.router)
