"""Start a server process for a benchmark and stop it afterwards, whatever happens.

Every benchmark that measures the service through HTTP needs the same three things:
the process in its own session (so SIGTERM reaches uvicorn's children too), a wait
until `/healthz` answers (or the process dies), and a stop that escalates to SIGKILL
when a graceful shutdown hangs, so that a failed run never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    """A running server: its base URL and its process group (the server and every child)."""

    base: str
    pgid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the group's live processes have used so far.

        The API processes of `--workers N` and the embedded worker are all in the group,
        so the difference over a run, divided by the requests answered, is the server's
        CPU cost of a request: a figure that, unlike latency, does not depend on what else
        the machine runs. A process that exited during the run is not counted.
        """
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.pgid:  # fields[2] is the process group
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(
    command: list[str],
    env: dict[str, str],
    port: int,
    *,
    log: IO[bytes] | None = None,
    start_timeout: float = 120.0,
    stop_timeout: float = 30.0,
) -> Iterator[Server]:
    """The server while the block runs."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, start_timeout)
        yield Server(base, process.pid)  # start_new_session: its pid is its group's id
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once `/healthz` answers 200; raise if the process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the server did not become healthy")
