"""`aplserve serve` as the reliability tests run it: a real uvicorn on a free loopback port,
optionally on a small tmpfs of its own, with the settings of the test."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx

from api.auth import create_api_key
from core.db.session import dispose_engines, session_scope
from core.settings import Settings
from tests.reliability.faults import on_tmpfs
from tests.worker.harness import START_TIMEOUT, ServiceProcess, free_port, service_env, wait_for


def outside_settings(tmp_path: Path, **fields: object) -> Settings:
    """SQLite settings whose database and broker live outside the data dir (which may be a tmpfs)."""
    data_dir = tmp_path / "var"
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, object] = {
        "database_url": f"sqlite:///{state / 'aplserve.db'}",
        "broker_url": f"sqla+sqlite:///{state / 'broker.db'}",
    }
    return Settings(data_dir=data_dir, **(defaults | fields))  # type: ignore[arg-type]


def explicit_env(settings: Settings) -> dict[str, str]:
    """APLSERVE_* variables for every field the test set on `settings`, so a process gets them too."""
    env = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"APLSERVE_{name.upper()}"] = text
    return env


class Server:
    """One `aplserve serve` (`processes` API processes); `tmpfs_bytes` puts its data dir on a
    private tmpfs of that size."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        worker: bool = False,
        tmpfs_bytes: int | None = None,
        env: dict[str, str] | None = None,
        processes: int = 1,
    ) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "aplserve.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if not worker:
            command.append("--no-worker")
        if processes > 1:
            command += ["--workers", str(processes)]
        if tmpfs_bytes is not None:
            command = on_tmpfs(settings.data_dir, tmpfs_bytes, command)
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"serve-{self.port}.log"
        extra = explicit_env(settings) | (env or {})
        self.process = ServiceProcess(command, service_env(settings, **extra), log_path)
        try:
            wait_for(self._healthy, START_TIMEOUT, f"{self.url}/healthz", interval=0.2)
            if worker:
                self.process.wait_for_log("aplserve worker ready")
        except BaseException:
            self.process.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _healthy(self) -> bool:
        if not self.process.alive():
            raise AssertionError(f"aplserve serve exited:\n{self.process.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def key(self, owner: str = "tester") -> dict[str, str]:
        with session_scope(self.settings) as session:
            _, key = create_api_key(session, owner)
        dispose_engines()
        return {"Authorization": f"Bearer {key}"}

    def client(self, headers: dict[str, str] | None = None, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers or {}, timeout=timeout)

    def log(self) -> str:
        return self.process.log()

    def kill(self) -> None:
        self.process.kill()

    def close(self) -> None:
        self.process.close()


class HealthProbe:
    """GET /healthz every 20 ms on a connection of its own, from a thread, while the test works."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies.append(time.monotonic() - started)
                else:
                    self.failures += 1
                self._stop.wait(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
