"""The one exception the client raises for anything the service (or the way to it) refused."""

from __future__ import annotations

from typing import Any

import httpx


class APIError(Exception):
    """A problem+json answer, a non-JSON error answer, or no answer at all.

    `status` is the HTTP status, or 0 when no answer came (connection refused, timed
    out) or a client-side check failed (a downloaded artifact's checksum). `code` is
    the service's snake_case machine code; `errors` lists validation problems (422)
    as `{"loc": [...], "msg": ...}`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{detail} ({code}, HTTP {status})" if status else f"{detail} ({code})")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        """Read a problem+json body; anything else (a proxy's HTML page) becomes http_<status>."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            errors = body.get("errors")
            return cls(
                response.status_code,
                body["code"],
                str(body.get("detail") or body.get("title") or response.reason_phrase),
                title=body.get("title"),
                errors=errors if isinstance(errors, list) else None,
            )
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return cls(response.status_code, f"http_{response.status_code}", text or response.reason_phrase)

    @property
    def is_user_error(self) -> bool:
        """The request was refused as asked (4xx, or a client-side check of the input)."""
        return 400 <= self.status < 500

    @classmethod
    def from_transport(cls, error: httpx.TransportError, base_url: str) -> APIError:
        code = "timeout" if isinstance(error, httpx.TimeoutException) else "unreachable"
        return cls(0, code, f"no answer from {base_url}: {error or type(error).__name__}")


class IdLookupError(APIError):
    """A short id that names no single item (too short, or the start of several ids); no request failed."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(0, code, detail)

    @property
    def is_user_error(self) -> bool:
        return True
