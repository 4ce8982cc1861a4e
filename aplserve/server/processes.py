"""Several API processes on one port, each accepting on a listening socket of its own.

uvicorn's `--workers` shares one listening socket between its processes, and the first
process to wake accepts every connection waiting. 256 clients that connect at once (a
restart, a reconnect storm) split 145/111 and stay so on keep-alive, and the busier
process answers its clients about 1.5 times slower (docs/reliability.md). With
SO_REUSEPORT every process listens on a socket of its own and the kernel spreads new
connections over them by the hash of their addresses.

The parent holds the port (a bound socket that never listens, so a server already on
it is found at once), keeps the processes alive (one that dies is started again after
a growing delay; one whose event loop stopped running, for `hang_seconds`, is killed
first) and on SIGTERM or SIGINT gives each uvicorn its graceful shutdown, then kills
what is left after the grace period. The liveness signal is a timestamp each process's
event loop writes to shared memory every tick (0.1 s): unlike uvicorn's own supervisor,
which pings a thread of the process, it also catches a loop that is blocked while the
process still runs.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

log = logging.getLogger(__name__)

APP = "api.main:create_app"
STOP_GRACE_SECONDS = 30.0
MAX_RESTART_DELAY_SECONDS = 30.0
#: A process that ran this long before dying is started again at once.
HEALTHY_RUN_SECONDS = 60.0
#: How long a new process may take to import the app and start serving before its first tick.
START_GRACE_SECONDS = 120.0


class _Beat(Protocol):
    """A double in shared memory (`Value("d", lock=False)`): one writer, one reader, no lock needed."""

    value: float


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


def local_address(host: str) -> str:
    """An address of this machine that reaches a server bound to `host` (0.0.0.0 and :: are
    not addresses to connect to; Linux binds :: for IPv4 too)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _already_served(host: str, port: int) -> bool:
    """Whether something answers on the port: SO_REUSEPORT would otherwise share it silently
    with another server of the same user instead of failing."""
    try:
        with socket.create_connection((local_address(host), port), timeout=1.0):
            return True
    except OSError:
        return False


def serve_one(host: str, port: int, options: dict[str, Any], log_level: str, beat: _Beat) -> None:
    """One API process: its own listening socket, uvicorn serving the app on it, a heartbeat."""
    import uvicorn

    class BeatingServer(uvicorn.Server):
        async def on_tick(self, counter: int) -> bool:
            beat.value = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
            return await super().on_tick(counter)

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = reuse_port_socket(host, port)
    config = uvicorn.Config(APP, factory=True, host=host, port=port, **options)
    BeatingServer(config).run(sockets=[sock])


@dataclass
class _Child:
    process: BaseProcess
    started: float
    #: The process's last event-loop tick (time.monotonic()); 0 until its server is up.
    beat: _Beat

    def hung_for(self, now: float, hang_seconds: float) -> float | None:
        """Seconds since the last sign of life, when that is past the limit; else None."""
        last, limit = (
            (self.beat.value, hang_seconds) if self.beat.value else (self.started, START_GRACE_SECONDS)
        )
        return now - last if now - last > limit else None


class ServerProcesses:
    """Keeps `count` API processes serving `host:port` until SIGTERM or SIGINT."""

    def __init__(
        self,
        host: str,
        port: int,
        count: int,
        options: dict[str, Any],
        log_level: str,
        *,
        hang_seconds: float = 30.0,
    ) -> None:
        self._host, self._port = host, port
        self._args = (host, port, options, log_level)  # serve_one's, for each process
        self._count = count
        self._hang_seconds = hang_seconds
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
        children: list[_Child] = []
        try:
            children.extend(self._start() for _ in range(self._count))
            self._supervise(children)
        finally:
            self._stop([child.process for child in children])
            holder.close()

    def _start(self) -> _Child:
        beat = self._context.Value("d", 0.0, lock=False)
        process = self._context.Process(target=serve_one, args=(*self._args, beat), name="aplserve-api")
        process.start()
        log.info("API process %s started", process.pid)
        return _Child(process, time.monotonic(), beat)

    def _supervise(self, children: list[_Child]) -> None:
        delays = [0.0] * len(children)
        while not self._stopping.wait(0.5):
            for index, child in enumerate(children):
                if child.process.is_alive() and not self._kill_if_hung(child):
                    continue
                ran = time.monotonic() - child.started
                delays[index] = (
                    0.0
                    if ran >= HEALTHY_RUN_SECONDS
                    else min(MAX_RESTART_DELAY_SECONDS, delays[index] * 2 or 1.0)
                )
                log.warning(
                    "API process %s exited (code %s) after %.0f s; starting another in %.0f s",
                    child.process.pid,
                    child.process.exitcode,
                    ran,
                    delays[index],
                )
                if self._stopping.wait(delays[index]):
                    return
                children[index] = self._start()

    def _kill_if_hung(self, child: _Child) -> bool:
        silent = child.hung_for(time.monotonic(), self._hang_seconds)
        if silent is None:
            return False
        log.error(
            "API process %s has not run its event loop for %.0f s (limit %.0f s); killing it",
            child.process.pid,
            silent,
            self._hang_seconds,
        )
        child.process.kill()  # SIGKILL also ends a stopped process
        child.process.join(10)
        return True

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
