"""Exception handlers: every error response is problem+json with a machine code."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.validation_messages import request_models, validation_problem
from core.errors import AppError
from core.storage import is_storage_full

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(error: AppError) -> JSONResponse:
    return JSONResponse(
        error.problem(), status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers
    )


def storage_full() -> AppError:
    return AppError(
        507,
        "storage_full",
        "the server ran out of disk space; nothing was stored, and the operators must free some",
        title="Insufficient Storage",
    )


def _invalid_characters() -> AppError:
    return AppError(
        422,
        "invalid_characters",
        "the request holds a value that cannot be stored: a NUL, an unpaired surrogate or a value "
        "longer than its field allows",
        errors=[{"loc": ["body"], "msg": "invalid characters or length"}],
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        models = request_models(request.scope.get("endpoint"))
        return problem_response(validation_problem(exc.errors(), models))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase
        code = getattr(exc, "code", None) or phrase.lower().replace(" ", "_").replace("-", "_")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else phrase
        return problem_response(AppError(exc.status_code, code, detail, headers=exc.headers))

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        if is_storage_full(exc):
            log.error("the database's disk is full: %s", exc.__class__.__name__)
            return problem_response(storage_full())
        log.error("database unavailable: %s", exc.__class__.__name__)
        return problem_response(
            AppError(503, "database_unavailable", "the database is unavailable; try again shortly")
        )

    _install_resource_handlers(app)


def _install_resource_handlers(app: FastAPI) -> None:
    """Failures of what the service runs on: the pool, the disk, values the database cannot store."""

    @app.exception_handler(PoolTimeoutError)
    async def _pool_exhausted(_: Request, exc: PoolTimeoutError) -> JSONResponse:
        log.error("no database connection was free in time (pool exhausted)")
        return problem_response(
            AppError(
                503,
                "database_busy",
                "the service is overloaded; try again shortly",
                headers={"Retry-After": "1"},
            )
        )

    @app.exception_handler(DataError)
    async def _unstorable_value(_: Request, exc: DataError) -> JSONResponse:
        log.info("refused a value the database cannot store: %s", str(exc.orig).splitlines()[0])
        return problem_response(_invalid_characters())

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        return problem_response(_invalid_characters())

    @app.exception_handler(OSError)
    async def _os_error(_: Request, exc: OSError) -> JSONResponse:
        if is_storage_full(exc):
            log.error("disk full while answering a request: %s", exc)
            return problem_response(storage_full())
        log.exception("unhandled error", exc_info=exc)
        return problem_response(AppError(500, "internal", "an internal error occurred; it was logged"))

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        if is_storage_full(exc):
            log.error("disk full while answering a request: %s", exc)
            return problem_response(storage_full())
        log.exception("unhandled error", exc_info=exc)
        return problem_response(AppError(500, "internal", "an internal error occurred; it was logged"))
