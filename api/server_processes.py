"""Several API processes on one port, each accepting on a listening socket of its own.

uvicorn's `--workers` shares one listening socket between its processes, and the first
process to wake accepts every connection waiting. 256 clients that connect at once (a
restart, a reconnect storm) split 145/111 and stay so on keep-alive, and the busier
process answers its clients about 1.5 times slower (docs/reliability.md). With
SO_REUSEPORT every process listens on a socket of its own and the kernel spreads new
connections over them by the hash of their addresses.

The parent holds the port (a bound socket that never listens, so a server already on
it is found at once), keeps the processes alive (one that dies is started again after
a growing delay) and on SIGTERM or SIGINT gives each uvicorn its graceful shutdown,
then kills what is left after the grace period. Unlike uvicorn's supervisor it does not
ping its processes: a process that hangs without dying is not replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger(__name__)

APP = "api.main:create_app"
STOP_GRACE_SECONDS = 30.0
MAX_RESTART_DELAY_SECONDS = 30.0
#: A process that ran this long before dying is started again at once.
HEALTHY_RUN_SECONDS = 60.0


def supported() -> bool:
    """SO_REUSEPORT balances accepted connections on Linux only (on macOS the last socket gets them)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _already_served(host: str, port: int) -> bool:
    """Whether something answers on the port: SO_REUSEPORT would otherwise share it silently
    with another server of the same user instead of failing."""
    target = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=1.0):
            return True
    except OSError:
        return False


def serve_one(host: str, port: int, options: dict[str, Any], log_level: str) -> None:
    """One API process: its own listening socket, uvicorn serving the app on it."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = reuse_port_socket(host, port)
    config = uvicorn.Config(APP, factory=True, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


class ServerProcesses:
    """Keeps `count` API processes serving `host:port` until SIGTERM or SIGINT."""

    def __init__(self, host: str, port: int, count: int, options: dict[str, Any], log_level: str) -> None:
        self._host, self._port = host, port
        self._args = (host, port, options, log_level)  # serve_one's, for each process
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()

    def run(self) -> None:
        if _already_served(self._host, self._port):
            raise SystemExit(
                f"port {self._port} is already served on {self._host}; "
                "stop that server or pick another --port"
            )
        # Bound, never listening: an address in use without SO_REUSEPORT fails here.
        holder = reuse_port_socket(self._host, self._port)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        processes: list[tuple[BaseProcess, float]] = []
        try:
            processes.extend(self._start() for _ in range(self._count))
            self._supervise(processes)
        finally:
            self._stop([process for process, _ in processes])
            holder.close()

    def _start(self) -> tuple[BaseProcess, float]:
        process = self._context.Process(target=serve_one, args=self._args, name="aplserve-api")
        process.start()
        log.info("API process %s started", process.pid)
        return process, time.monotonic()

    def _supervise(self, processes: list[tuple[BaseProcess, float]]) -> None:
        delays = [0.0] * len(processes)
        while not self._stopping.wait(0.5):
            for index, (process, started) in enumerate(processes):
                if process.is_alive():
                    continue
                ran = time.monotonic() - started
                delays[index] = (
                    0.0
                    if ran >= HEALTHY_RUN_SECONDS
                    else min(MAX_RESTART_DELAY_SECONDS, delays[index] * 2 or 1.0)
                )
                log.warning(
                    "API process %s exited (code %s) after %.0f s; starting another in %.0f s",
                    process.pid,
                    process.exitcode,
                    ran,
                    delays[index],
                )
                if self._stopping.wait(delays[index]):
                    return
                processes[index] = self._start()

    def _stop(self, processes: list[BaseProcess]) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning(
                    "API process %s did not stop within %.0f s; killing it", process.pid, STOP_GRACE_SECONDS
                )
                process.kill()
                process.join(5)
