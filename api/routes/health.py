"""Liveness and readiness probes (no key needed).

`/healthz` is async and touches nothing: it answers while the database, the broker or
every API thread is stuck. `/readyz` probes the database and the broker on threads of
their own (not the API's pool, which a hung dependency may have filled), each with a
deadline, and names the dependency that is down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from fastapi.responses import JSONResponse

from api.deps import SettingsDep
from api.problems import PROBLEM_JSON
from api.routing import APIRouter
from api.schemas import Health, Readiness, problem_responses
from api.services.readiness import CHECKS
from core.errors import problem_type
from core.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


#: One small pool per dependency: a hung broker's stuck probes never delay the database's.
_PROBE_THREADS = {
    name: concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix=f"probe-{name}") for name in CHECKS
}


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers (no database, broker or thread-pool wait)."""
    return Health()


def _timed_out(exc: BaseException) -> bool:
    """Whether a failure is a deadline, also when a library re-raised it as its own error.

    kombu turns redis' socket timeout into an OperationalError ("Timeout reading from socket")
    or lets it through, depending on which deadline fires first; a hung broker must read
    "timeout" either way.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError) or "timeout" in type(seen).__name__.lower():
            return True
        if "timeout" in str(seen).lower() or "timed out" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _probe(name: str, settings: Settings) -> str:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.run_in_executor(_PROBE_THREADS[name], CHECKS[name], settings),
            timeout=settings.readiness_timeout_seconds,
        )
    except TimeoutError:
        log.warning("readiness: %s did not answer in time", name)
        return "timeout"
    except Exception as exc:
        if _timed_out(exc):  # the client library's own deadline (socket timeout)
            log.warning("readiness: %s did not answer in time: %s", name, exc)
            return "timeout"
        log.warning("readiness: %s is unavailable: %s", name, exc)
        return "unavailable"
    return "ok"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses("not_ready"),
)
async def readyz(settings: SettingsDep) -> Readiness | JSONResponse:
    """Readiness: the database answers `SELECT 1`, the broker accepts a connection and the object
    storage (s3://) answers a HEAD of its bucket.

    503 `not_ready` when one does not; the problem also holds `database`, `broker` and `storage`.
    """
    database, broker, storage = await asyncio.gather(*(_probe(name, settings) for name in CHECKS))
    state = Readiness(database=database, broker=broker, storage=storage)
    results = (("database", database), ("broker", broker), ("storage", storage))
    if all(result == "ok" for _, result in results):
        return state
    down = [f"the {name} ({result})" for name, result in results if result != "ok"]
    return JSONResponse(
        {
            "type": problem_type("not_ready"),
            "title": "Service Unavailable",
            "status": 503,
            "detail": f"not ready: {' and '.join(down)} did not answer",
            "code": "not_ready",
            **state.model_dump(),
        },
        status_code=503,
        media_type=PROBLEM_JSON,
    )
