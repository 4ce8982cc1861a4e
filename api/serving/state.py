"""The serving engine of an app: created with the app's lifespan, metrics on its registry.

The engine lives in the app's `AppState.serving`. The models router's lifespan creates
it at startup and stops its threads at shutdown; a request reaching an app whose
lifespan did not run (e.g. a bare ASGI transport in a test) gets one created on first use.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from api.serving.batcher import BatchStats
from api.serving.engine import EngineConfig, ServingEngine
from api.state import app_state
from api.ttl_cache import TTLCache
from core.settings import Settings

_lock = threading.Lock()
#: Items per forward pass, up to the largest sensible batch.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        max_models=settings.serving_max_models,
        max_memory_bytes=settings.serving_max_memory_bytes,
        batching=settings.serving_batching,
        max_batch_size=settings.serving_max_batch_size,
        max_wait_s=settings.serving_max_wait_ms / 1000.0,
        device=settings.serving_device,
        instances=settings.serving_instances,
        torch_threads=settings.serving_torch_threads,
    )


class ServingMetrics:
    """Prometheus series of the serving engine, registered once per app registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.batch_items = Histogram(
            "aplserve_predict_batch_size",
            "Inputs per model forward pass (micro-batch size).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_requests = Histogram(
            "aplserve_predict_batch_requests",
            "Predict requests merged into one forward pass.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "aplserve_predict_batch_seconds",
            "Time of one forward pass, preprocessing included.",
            registry=registry,
        )
        self.loads = Counter(
            "aplserve_model_loads", "Models loaded into the serving cache.", registry=registry
        )
        self.evictions = Counter(
            "aplserve_model_evictions",
            "Models evicted from (or replaced in) the serving cache.",
            registry=registry,
        )
        self.loaded = Gauge("aplserve_models_loaded", "Models in the serving cache.", registry=registry)
        self.loaded_bytes = Gauge(
            "aplserve_models_loaded_bytes",
            "Estimated parameter bytes of the cached models.",
            registry=registry,
        )
        self._seen_loads = 0
        self._seen_evictions = 0

    def observe_batch(self, requests: int, items: int, seconds: float) -> None:
        self.batch_items.observe(items)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)

    def update(self, engine: ServingEngine) -> None:
        snapshot = engine.snapshot()
        with _lock:
            self.loads.inc(max(0, snapshot["loads"] - self._seen_loads))
            self.evictions.inc(max(0, snapshot["evictions"] - self._seen_evictions))
            self._seen_loads, self._seen_evictions = snapshot["loads"], snapshot["evictions"]
        self.loaded.set(len(snapshot["loaded"]))
        self.loaded_bytes.set(engine.memory_bytes())


def lookup_cache(app: FastAPI) -> TTLCache[Any]:
    """(owner id, model id) -> what predict needs of the Model row, for LOOKUP_TTL_S seconds.

    Model rows never change after the worker writes them, and the caller is still
    authenticated on every request, so reusing the row briefly is safe; it saves a
    database round trip (and a thread-pool hop) on each prediction.
    """
    return app_state(app).serving_lookups


def engine_of(app: FastAPI) -> ServingEngine:
    """The app's engine, created on first use."""
    state = app_state(app)
    engine = state.serving
    if engine is not None:
        return engine
    with state.lock:
        if state.serving is None:
            if state.serving_metrics is None:
                state.serving_metrics = ServingMetrics(state.metrics.registry)
            metrics = state.serving_metrics
            state.serving = ServingEngine(
                engine_config(state.settings),
                stats=BatchStats(metrics.observe_batch),
                on_change=metrics.update,
            )
        return state.serving


async def get_engine(request: Request) -> ServingEngine:
    """Async on purpose: a sync dependency would cost a thread-pool hop on every request."""
    return engine_of(request.app)


def close_engine(app: FastAPI) -> None:
    state = app_state(app)
    with state.lock:
        engine, state.serving = state.serving, None
    if engine is not None:
        engine.close()


@asynccontextmanager
async def serving_lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine_of(app)
    try:
        yield
    finally:
        close_engine(app)
