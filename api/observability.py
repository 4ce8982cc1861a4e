"""Prometheus metrics: HTTP requests by route template and status, latency, upload bytes,
and jobs by status read from the database at scrape time.

Each app gets its own registry so that several apps in one process (tests) never
clash on metric names, and the job gauge is computed when scraped, so it is right
even though the worker, not this process, changes job states.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.routing import APIRouter
from api.state import app_state
from core.db.models import Job
from core.db.session import session_factory
from core.jobs.status import JobStatus
from core.settings import Settings

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"


class JobsByStatus(Collector):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("aplserve_jobs", "Jobs in the database by status.", labels=["status"])
        try:
            with session_factory(self._settings)() as session:
                counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        except Exception:  # a scrape must not fail because the database is down
            log.warning("could not count jobs for /metrics", exc_info=True)
            return
        for status in JobStatus:
            gauge.add_metric([status], float(counts.get(status, 0)))
        yield gauge


class Metrics:
    """The metrics of one app (`AppState.metrics`)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aplserve_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aplserve_http_request_duration_seconds",
            "Time to answer an HTTP request (for streams: until the stream ends).",
            ["method", "route"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "aplserve_upload_bytes", "Bytes of dataset uploads accepted.", registry=self.registry
        )
        self.registry.register(JobsByStatus(settings))


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so that streamed responses pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics (no key needed)."""
    registry: CollectorRegistry = app_state(request.app).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, metrics: Metrics) -> None:
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
