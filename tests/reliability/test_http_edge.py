"""The HTTP edge of a real `aplserve serve`: oversized and slow headers, oversized and slow bodies.

Raw sockets, because an HTTP client library refuses to send what an attacker sends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.servers import HealthProbe, Server, outside_settings
from tests.worker.harness import wait_for

HEAD_LIMIT = 64 * 1024
SLOW_SECONDS = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("edge")
    settings = outside_settings(base)
    env = {
        "APLSERVE_HEADER_TIMEOUT_SECONDS": str(SLOW_SECONDS),
        "APLSERVE_BODY_TIMEOUT_SECONDS": str(SLOW_SECONDS),
    }
    running = Server(settings, base / "logs", env=env)
    try:
        yield running
    finally:
        running.close()


def _status(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data.split(b" ", 2)[1])


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def send_huge_header(port: int, size: int) -> tuple[float, int | None]:
    """Send a request whose one header is `size` bytes; (seconds until refused, status or None)."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port))
    answer = b""
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 65536
        sent = 0
        try:
            while sent < size:
                piece = chunk[: size - sent]
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: refused
        answer = _read_answer(sock, 5)
    finally:
        sock.close()
    return time.monotonic() - started, _status(answer)


def test_an_oversized_header_is_refused_at_once_and_others_are_served(server: Server) -> None:
    refusals: list[tuple[float, int | None]] = []
    with HealthProbe(server.url) as probe:
        deadline = time.monotonic() + 20
        while len(probe.latencies) < 10 and time.monotonic() < deadline:  # attack while others are served
            refusals.append(send_huge_header(server.port, 10 * 1024 * 1024))
    slowest = max(seconds for seconds, _ in refusals)
    assert slowest < 1.0, f"refusing a 10 MB header took {slowest:.2f} s"
    assert {status for _, status in refusals} <= {
        431,
        None,
    }  # 431, or the reset of a connection still sending
    assert probe.failures == 0 and len(probe.latencies) >= 10 and max(probe.latencies) < 0.5, probe.latencies
    # Just over the limit the answer is readable; a header under it is served.
    seconds, status = send_huge_header(server.port, HEAD_LIMIT)
    assert status == 431 and seconds < 1.0
    seconds, status = send_huge_header(server.port, HEAD_LIMIT - 1024)
    assert status == 200


def test_headers_that_trickle_in_time_out(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        answer = _read_answer(sock, 10)
    assert _status(answer) == 408 and b'"code": "request_timeout"' in answer
    assert SLOW_SECONDS <= time.monotonic() - started < SLOW_SECONDS + 2


def _post(port: int, path: str, head: str, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body)
        return _read_answer(sock, 10)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_json_bodies_over_the_limit_are_refused_before_they_are_read(server: Server) -> None:
    # Declared too large: refused from the headers alone, without a key and without the body.
    answer = _post(
        server.port, "/v1/jobs", "Content-Type: application/json\r\nContent-Length: 52428800\r\n", b""
    )
    assert _status(answer) == 413 and b"body_too_large" in answer
    # Sent chunked (no length up front): refused once 1 MiB has arrived, memory stays flat.
    before = _rss_bytes(server.pid)

    def chunked() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
            sock.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
            try:
                for _ in range(800):  # 50 MiB
                    sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return _read_answer(sock, 10)

    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(chunked())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 8 and all(_status(a) in (413, None) for a in answers), answers
    assert any(_status(a) == 413 for a in answers)
    grown = _rss_bytes(server.pid) - before
    print(
        f"\nEDGE 8 x 50 MiB chunked JSON bodies, no key: all refused, server memory +{grown / 2**20:.1f} MiB"
    )
    assert grown < 64 * 1024 * 1024


def test_a_body_that_stalls_times_out(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"dataset_id": '
        )
        answer = _read_answer(sock, 10)
    assert _status(answer) == 408 and b"request_timeout" in answer
    assert SLOW_SECONDS <= time.monotonic() - started < SLOW_SECONDS + 2


@pytest.mark.reliability
def test_eight_100_mb_headers_at_once_do_not_slow_other_clients(server: Server) -> None:
    """The issue's attack: a 100 MB header stalled every client for 26 s; now each is cut at 64 KiB."""
    results: list[tuple[float, int | None]] = []
    with HealthProbe(server.url) as probe:
        threads = [
            threading.Thread(target=lambda: results.append(send_huge_header(server.port, 100 * 1024 * 1024)))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        wait_for(lambda: len(probe.latencies) >= 20, 10, "the probe's samples")
    slowest = max(seconds for seconds, _ in results)
    latencies = sorted(probe.latencies)
    print(
        f"\nEDGE 8 x 100 MB headers: each refused within {slowest:.3f} s; /healthz max "
        f"{latencies[-1] * 1000:.0f} ms over {len(latencies)} probes"
    )
    assert len(results) == 8 and slowest < 1.0
    assert probe.failures == 0 and latencies[-1] < 0.5
