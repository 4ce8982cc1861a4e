"""`APIRouter`: FastAPI's router whose sync routes give their database connection back in time.

FastAPI runs a sync route in a worker thread, then waits for a worker thread again
to validate the response model, and only then runs the exit code of the route's
dependencies. A session from a dependency therefore kept its connection checked out
while the request waited for a free thread: with more concurrent requests than
threads, requests held more connections than the pool had, and every request timed
out waiting for the pool (issue 14: 0 of 128 clients answered). `SessionRoute` closes
every Session argument in the route's own thread the moment the route returns, so a
connection is held only while the route runs. Every router of the API is made here
(tests/api/test_routing.py checks).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter as _FastAPIRouter
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

_RELEASES = "__aplserve_releases_sessions__"


def _closing_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(endpoint, _RELEASES, False):
        return endpoint

    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in (*args, *kwargs.values()):
                if isinstance(value, Session):
                    value.close()

    setattr(wrapper, _RELEASES, True)
    return wrapper


class SessionRoute(APIRoute):
    """An APIRoute whose sync endpoint closes its sessions before the response is serialized."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint) and not inspect.isasyncgenfunction(endpoint):
            endpoint = _closing_sessions(endpoint)
        super().__init__(path, endpoint, **kwargs)


def releases_sessions(endpoint: Callable[..., Any]) -> bool:
    return bool(getattr(endpoint, _RELEASES, False))


def APIRouter(**kwargs: Any) -> _FastAPIRouter:
    """fastapi.APIRouter with SessionRoute as its route class."""
    kwargs.setdefault("route_class", SessionRoute)
    return _FastAPIRouter(**kwargs)
