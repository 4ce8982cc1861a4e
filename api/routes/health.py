"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep
from api.problems import PROBLEM_JSON
from api.schemas import Health, Readiness, problem_responses
from core.broker import check_broker
from core.db.session import get_engine
from core.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health()


def _check_database(settings: Settings) -> None:
    with get_engine(settings).connect() as connection:
        connection.execute(text("SELECT 1"))


def _check_broker(settings: Settings) -> None:
    check_broker(settings, timeout=settings.readiness_timeout_seconds)


async def _probe(name: str, check: Callable[[Settings], None], settings: Settings) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(check, settings), timeout=settings.readiness_timeout_seconds)
    except TimeoutError:
        log.warning("readiness: %s did not answer in time", name)
        return "timeout"
    except Exception as exc:
        log.warning("readiness: %s is unavailable: %s", name, exc)
        return "unavailable"
    return "ok"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses("not_ready"),
)
async def readyz(settings: SettingsDep) -> Readiness | JSONResponse:
    """Readiness: the database answers `SELECT 1` and the broker accepts a connection.

    503 `not_ready` when one does not; the problem also holds `database` and `broker`.
    """
    database, broker = await asyncio.gather(
        _probe("database", _check_database, settings), _probe("broker", _check_broker, settings)
    )
    state = Readiness(database=database, broker=broker)
    if database == "ok" and broker == "ok":
        return state
    return JSONResponse(
        {
            "type": "https://aplserve.dev/problems/not-ready",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "a dependency of the service is unavailable",
            "code": "not_ready",
            **state.model_dump(),
        },
        status_code=503,
        media_type=PROBLEM_JSON,
    )
