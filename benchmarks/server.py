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
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running(
    command: list[str],
    env: dict[str, str],
    port: int,
    *,
    log: IO[bytes] | None = None,
    start_timeout: float = 120.0,
    stop_timeout: float = 30.0,
) -> Iterator[str]:
    """The server's base URL while the block runs."""
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
        yield base
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
