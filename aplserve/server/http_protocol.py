"""The HTTP protocol `aplserve serve` runs: uvicorn's httptools protocol with a bounded request head.

uvicorn's httptools protocol accepts a request head of any size and any duration.
httptools joins a header value from its pieces by repeated concatenation, so the
cost grows with the square of the header's size, on the event loop: a 100 MB header
stalled every other client for 12.7 s here (benchmarks/header_flood.py; issue 14
measured 26 s). h11 has a limit (`h11_max_incomplete_event_size`) but parses in pure
Python, slower per request than httptools' C parser.

`LimitedHttpToolsProtocol` keeps httptools and counts the bytes of each request head
before the parser sees them: past `max_header_bytes` the client gets 431 and the
connection is closed, after at most that many bytes were parsed. A head that is not
complete within `header_timeout_seconds` (a client that connects and sends nothing,
or sends its headers a byte at a time) gets 408 and is closed too. Measured figures
are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.errors import problem_type
from core.settings import Settings, get_settings

PROTOCOL = "aplserve.server.http_protocol:LimitedHttpToolsProtocol"


def _problem(status: int, reason: str, code: str, detail: str) -> bytes:
    body = json.dumps(
        {
            "type": problem_type(code),
            "title": reason,
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a size limit and a deadline on every request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head = settings.max_header_bytes
        self._head_timeout = settings.header_timeout_seconds
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        if self._head_bytes == 0:
            self._arm_head_timer()
        room = self._max_head - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        self._head_bytes += room
        super().data_received(data[:room])  # may complete the head
        if self._in_head:
            self._refuse(431, "Request Header Fields Too Large", "headers_too_large", self._too_large())
        elif not self.transport.is_closing():
            super().data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next request's head starts here
        self._head_bytes = 0

    def _too_large(self) -> str:
        return f"the request line and headers are larger than the limit of {self._max_head} bytes"

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self._in_head and not busy and not self.transport.is_closing():
            if self._head_bytes == 0:
                self.transport.close()  # an idle connection: nothing to answer
                return
            detail = f"the request headers did not arrive within {self._head_timeout:g} s"
            self._refuse(408, "Request Timeout", "request_timeout", detail)

    def _refuse(self, status: int, reason: str, code: str, detail: str) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.logger.warning("refused a request head: %s", detail)
            self.transport.write(_problem(status, reason, code, detail))
            self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for the API: this protocol (h11 with the same head limit without httptools)."""
    return {
        "http": PROTOCOL if importlib.util.find_spec("httptools") else "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": 5,
        # uvicorn's own log level follows APLSERVE_LOG_LEVEL: `warning` also silences the access log.
        "log_level": settings.log_level.lower(),
    }
