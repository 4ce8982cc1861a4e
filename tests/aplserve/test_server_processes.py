"""`aplserve serve --workers N`: a listening socket per API process, connections opened at once
spread over them, a process that dies or hangs started again, SIGTERM stops them all, a port in
use refused."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from aplserve.server import processes
from tests.reliability.servers import Server, outside_settings
from tests.worker.harness import REPO, service_env, wait_for

pytestmark = pytest.mark.skipif(
    not processes.supported(), reason="SO_REUSEPORT spreads connections on Linux only"
)
CONNECTIONS = 64


def _ss(*args: str) -> str:
    return subprocess.run(["ss", "-tnp", *args], capture_output=True, text=True, check=True).stdout


def _listening_pids(port: int) -> set[int]:
    return {int(pid) for pid in re.findall(r"pid=(\d+)", _ss("-l", f"( sport = :{port} )"))}


def _connections_per_pid(port: int) -> Counter[int]:
    text = _ss("state", "established", f"( sport = :{port} )")
    return Counter(int(pid) for pid in re.findall(r"pid=(\d+)", text))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_connections_opened_at_once_are_spread_over_the_processes(tmp_path: Path) -> None:
    server = Server(outside_settings(tmp_path), tmp_path / "logs", processes=2)
    connections: list[socket.socket] = []
    try:
        wait_for(lambda: len(_listening_pids(server.port)) == 2, 60, "two listening API processes")
        connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(CONNECTIONS)]
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert all(connection.recv(64).startswith(b"HTTP/1.1 200") for connection in connections)
        counts = _connections_per_pid(server.port)
        assert set(counts) == _listening_pids(server.port) and sum(counts.values()) == CONNECTIONS
        # By hash: 32 +- 4 each; with one socket shared, a burst went 145/111 of 256 and worse.
        assert min(counts.values()) >= CONNECTIONS // 4, counts
    finally:
        for connection in connections:
            connection.close()
        server.close()


def test_a_process_that_dies_is_replaced_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    server = Server(outside_settings(tmp_path), tmp_path / "logs", processes=2)
    try:
        wait_for(lambda: len(_listening_pids(server.port)) == 2, 60, "two listening API processes")
        victim = min(_listening_pids(server.port))
        os.kill(victim, signal.SIGKILL)  # as the OOM killer would
        wait_for(
            lambda: victim not in (pids := _listening_pids(server.port)) and len(pids) == 2,
            60,
            "a new API process in its place",
        )
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        serving = _listening_pids(server.port)
        os.kill(server.pid, signal.SIGTERM)
        assert server.process.process.wait(timeout=60) == 0
        assert not any(_alive(pid) for pid in serving) and _listening_pids(server.port) == set()
        assert "exited (code -9)" in server.log()
    finally:
        server.close()


def test_a_process_whose_event_loop_stopped_is_killed_and_replaced(tmp_path: Path) -> None:
    env = {"APLSERVE_API_HANG_SECONDS": "2"}
    server = Server(outside_settings(tmp_path), tmp_path / "logs", processes=2, env=env)
    victim = 0
    try:
        wait_for(lambda: len(_listening_pids(server.port)) == 2, 60, "two listening API processes")
        healthy, victim = sorted(_listening_pids(server.port))
        os.kill(victim, signal.SIGSTOP)  # alive, never answering: what a deadlocked loop looks like
        wait_for(
            lambda: not _alive(victim) and len(pids := _listening_pids(server.port)) == 2 and healthy in pids,
            30,
            "the stopped process killed and a new one listening",
        )
        assert "has not run its event loop" in server.log()
        for _ in range(8):  # each on a new connection, so spread over both processes
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        if victim:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        server.close()


def test_a_port_already_served_is_refused_instead_of_shared(tmp_path: Path) -> None:
    settings = outside_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that allows sharing
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        command = [sys.executable, "-m", "aplserve.cli", "serve", "--no-worker", "--workers", "2"]
        done = subprocess.run(
            [*command, "--port", str(port)],
            cwd=REPO,
            env=service_env(settings, APLSERVE_DATABASE_URL=str(settings.database_url)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert f"port {port} is already served" in done.stderr + done.stdout


def test_wildcard_hosts_are_reached_and_shown_on_the_loopback() -> None:
    from aplserve.cli import local_url

    hosts = ("0.0.0.0", "::", "", "10.1.2.3", "::1")
    assert [processes.local_address(host) for host in hosts] == [
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.1",
        "10.1.2.3",
        "::1",
    ]
    assert (local_url("::", 8000), local_url("::1", 8000)) == ("http://127.0.0.1:8000", "http://[::1]:8000")
