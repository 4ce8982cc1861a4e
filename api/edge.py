"""The HTTP edge inside the app: what must be refused before any route (or auth) runs.

- A path holding a NUL or another control character is answered 404 (no route has
  such a path; a file or database lookup must never see one); a query string holding
  one is answered 422 `invalid_characters`.
- Request bodies are limited while they stream in, before anything buffers them and
  before authentication runs: a declared Content-Length over the limit is answered
  413 `body_too_large` without reading a byte, a chunked body as soon as it crosses
  it. The limit is `max_json_body_bytes` (job specs and every other JSON body);
  dataset uploads and predict stream their bodies with their own, larger limits.
- A body that stalls (no bytes for `body_timeout_seconds`), or a limited body that
  takes longer than that in all, is answered 408 `request_timeout`.

The oversized-header limit sits below the app, in the HTTP protocol (aplserve/server/http_protocol.py).
Refusals raised while a route reads the body are HTTPExceptions carrying a `code`, so
FastAPI passes them on (it turns other errors while reading a body into a 400) and the
problem handler renders them.
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from core.errors import AppError
from core.settings import Settings

#: Routes that stream their bodies themselves, each with its own limit (settings).
STREAMING_ROUTES = (
    ("POST", re.compile(r"^/v1/datasets/?$")),
    ("POST", re.compile(r"^/v1/models/[^/]+/predict/?$")),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")


class EdgeRefusal(HTTPException):
    """A request refused at the edge; `code` is its problem code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, detail, headers={"Connection": "close"})
        self.code = code


def body_too_large(limit: int) -> EdgeRefusal:
    return EdgeRefusal(413, "body_too_large", f"the request body is larger than the limit of {limit} bytes")


def body_timeout(seconds: float) -> EdgeRefusal:
    return EdgeRefusal(408, "request_timeout", f"the request body did not arrive within {seconds:g} s")


def _streams_itself(method: str, path: str) -> bool:
    return any(method == verb and pattern.match(path) for verb, pattern in STREAMING_ROUTES)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _refusal_for_target(scope: Scope) -> AppError | None:
    if _CONTROL.search(scope.get("path", "")):
        return AppError(404, "not_found", "nothing was found at this path")
    if _CONTROL_BYTES.search(unquote_to_bytes(scope.get("query_string", b""))):
        return AppError(
            422,
            "invalid_characters",
            "the query string holds a NUL or another control character",
            errors=[{"loc": ["query"], "msg": "control characters are not allowed"}],
        )
    return None


class EdgeMiddleware:
    """Pure ASGI, so streamed requests and responses pass through untouched."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body = settings.max_json_body_bytes
        self.timeout = settings.body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = _refusal_for_target(scope)
        limited = not _streams_itself(scope.get("method", "GET"), scope.get("path", ""))
        declared = _declared_length(scope)
        if refused is None and limited and declared is not None and declared > self.max_body:
            refused = AppError(
                413,
                "body_too_large",
                f"the request body is larger than the limit of {self.max_body} bytes",
                headers={"Connection": "close"},
            )
        if refused is not None:
            await problem_response(refused)(scope, receive, send)
            return
        await self.app(scope, self._guarded(receive, limited), send)

    def _guarded(self, receive: Receive, limited: bool) -> Receive:
        """`receive` with the body limit and timeouts; once the body is complete it is passed through
        untouched (a streaming response waits on it for the client's disconnect)."""
        received = 0
        done = False
        deadline = time.monotonic() + self.timeout

        async def guarded() -> Message:
            nonlocal received, done
            if done:
                return await receive()
            wait = min(self.timeout, deadline - time.monotonic()) if limited else self.timeout
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except TimeoutError:
                raise body_timeout(self.timeout) from None
            if message["type"] != "http.request":
                done = True
                return message
            received += len(message.get("body", b""))
            if limited and received > self.max_body:
                raise body_too_large(self.max_body)
            done = not message.get("more_body", False)
            return message

        return guarded
