"""The one error type of aplserve and its problem+json rendering (RFC 9457)."""

from __future__ import annotations

from typing import Any

#: Where the page about each code is served, by the app itself (api.apidocs): a relative
#: reference, so it resolves against whatever host and port the answer came from (RFC 9457 §3.1.1).
PROBLEM_TYPE_PATH = "/problems/"


def problem_type(code: str) -> str:
    """The `type` of a problem with this code: the path of its page on this server."""
    return f"{PROBLEM_TYPE_PATH}{code.replace('_', '-')}"


class AppError(Exception):
    """A failure a client can act on: an HTTP status, a snake_case code and a sentence.

    Services raise it; one exception handler turns it into problem+json. The
    detail never holds a path, SQL or a traceback.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.errors = errors
        self.headers = headers
        #: Further members of the problem body (e.g. a quota's `limit`); never the standard ones.
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        from http import HTTPStatus

        body: dict[str, Any] = {
            "type": problem_type(self.code),
            "title": self.title or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        for key, value in (self.extra or {}).items():
            body.setdefault(key, value)
        return body


def not_found(what: str) -> AppError:
    return AppError(404, "not_found", f"{what} was not found")
