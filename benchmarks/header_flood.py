"""How a server copes with a huge request header: time to refuse it and what other clients wait.

Usage: .venv/bin/python benchmarks/header_flood.py [--sizes 1,10,30,100] (MB)
       [--protocols httptools,h11,aplserve]

For each protocol it starts uvicorn on a free 127.0.0.1 port with a trivial ASGI app (so only
the HTTP layer is measured): `httptools` and `h11` are uvicorn's own protocols with their
defaults, `aplserve` is aplserve.server.http_protocol.LimitedHttpToolsProtocol with APLSERVE_MAX_HEADER_BYTES
(64 KiB by default), the protocol `aplserve serve` runs. For each size it sends one request
whose single header has that many bytes while a probe asks GET / every 50 ms on another
connection, and prints the seconds until the server answered or closed the connection, the
status (or `closed`) and the probe's slowest answer. Loopback only; at most 200 MB a request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "benchmarks.header_flood:app"
PROTOCOLS = {
    "httptools": "httptools",
    "h11": "h11",
    "aplserve": "aplserve.server.http_protocol:LimitedHttpToolsProtocol",
}
MAX_MB = 200


async def app(scope: dict[str, object], receive: object, send: object) -> None:
    """The smallest ASGI app: 200 `ok` to every request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(protocol: str) -> Iterator[int]:
    port = _free_port()
    # uvicorn's command line only names its own protocols; its Python API takes an import string too.
    run = (
        f"import uvicorn; uvicorn.run({APP!r}, port={port}, http={PROTOCOLS[protocol]!r}, log_level='error')"
    )
    command = [sys.executable, "-c", run]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"uvicorn with {protocol} did not start")
            time.sleep(0.1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def _probe(port: int, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.recv(1024)
        latencies.append(time.monotonic() - started)
        stop.wait(0.05)


def flood(port: int, size: int) -> tuple[float, str, float]:
    """(seconds until answered or closed, status, slowest probe answer in seconds)."""
    latencies: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=_probe, args=(port, stop, latencies), daemon=True)
    probe.start()
    started = time.monotonic()
    status = "closed"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk, sent = b"a" * 65536, 0
            while sent < size:
                sock.sendall(chunk[: size - sent])
                sent += min(len(chunk), size - sent)
            sock.sendall(b"\r\n\r\n")
            answer = sock.recv(64)
            status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "closed"
        except OSError:
            pass
    seconds = time.monotonic() - started
    stop.set()
    probe.join(60)
    return seconds, status, max(latencies, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,30,100", type=lambda t: [float(n) for n in t.split(",")])
    parser.add_argument("--protocols", default="httptools,h11,aplserve", type=lambda t: t.split(","))
    args = parser.parse_args()
    print("| protocol | header MB | refused after s | answer | slowest other client ms |")
    print("|---|---:|---:|---|---:|")
    for protocol in args.protocols:
        with server(protocol) as port:
            for megabytes in args.sizes:
                size = int(min(megabytes, MAX_MB) * 1024 * 1024)
                seconds, status, slowest = flood(port, size)
                print(
                    f"| {protocol} | {megabytes:g} | {seconds:.3f} | {status} | {slowest * 1000:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
