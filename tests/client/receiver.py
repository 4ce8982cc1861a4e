"""A local webhook receiver (http.server on 127.0.0.1 in a thread) for the tests.

It answers each call with the next status of a script (then 200) and records every
call's headers and raw body, so a test can verify signatures exactly as a real
receiver would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, call: Call) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def next_status(self) -> int:
        with self._changed:
            return self.statuses.pop(0) if self.statuses else 200

    def wait_for(self, count: int, timeout: float) -> list[Call]:
        """The first `count` calls, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} webhook calls, got {len(self.calls)}: {self.calls}"
                    )
                self._changed.wait(left)
            return list(self.calls[:count])


@contextmanager
def running_receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = receiver.next_status()
            # Recorded before the answer: once the caller has its response the call is in
            # `calls`, and `at` is earlier than anything the caller does after it.
            receiver.record(Call(self.path, dict(self.headers.items()), body, status, time.monotonic()))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", list(statuses or []))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
