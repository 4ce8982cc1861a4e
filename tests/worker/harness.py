"""Real service processes for the worker and end-to-end tests, and the rows they work on.

Workers and servers run as subprocesses exactly as in production (`python -m worker`,
`aplserve serve`), configured only through `APLSERVE_*` variables, each in its own
process group so a test can SIGKILL a worker with its children the way a crash
would. Every wait polls with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import text

from api.auth import get_or_create_owner
from core.broker import close_celery_apps
from core.db.models import Base, Dataset, Job
from core.db.session import dispose_engines, session_scope
from core.settings import Settings
from tests.services import unique_name

REPO = Path(__file__).resolve().parents[2]
#: Every process start on the shared 2-core test machine is slow; this bounds all waits.
START_TIMEOUT = 90.0
JOB_TIMEOUT = 120.0
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a service process configured like `settings` (and nothing else)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
    env.update(
        APLSERVE_DATA_DIR=str(settings.data_dir),
        APLSERVE_QUEUE_NAME=settings.queue_name,
        APLSERVE_JOB_LEASE_SECONDS=str(settings.job_lease_seconds),
        APLSERVE_JOB_MAX_ATTEMPTS=str(settings.job_max_attempts),
        APLSERVE_AUTH_ENABLED="true" if settings.auth_enabled else "false",
        # Two shared cores: one intra-op thread per process keeps the suite from thrashing.
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if settings.database_url:
        env["APLSERVE_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["APLSERVE_BROKER_URL"] = settings.broker_url
    env.update(extra)
    return env


class ServiceProcess:
    """A subprocess in its own process group with its output in a log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        def seen() -> bool:
            if not self.alive():
                raise AssertionError(f"process exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return text in self.log()

        wait_for(seen, timeout, f"{text!r} in {self.log_path.name}", interval=0.2)

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM (a warm shutdown); returns how long the process took to exit."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        self.process.wait(timeout=timeout)
        self._log.close()
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or the OOM killer would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def close(self) -> None:
        if self.alive():
            self.kill()
        else:  # the process is gone; its group may still hold children
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._log.close()


def start_worker(settings: Settings, log_path: Path, **env: str) -> ServiceProcess:
    """`python -m worker` for `settings`, once it consumes its queue."""
    worker = ServiceProcess([sys.executable, "-m", "worker"], service_env(settings, **env), log_path)
    try:
        worker.wait_for_log("aplserve worker ready")
    except BaseException:
        worker.close()
        raise
    return worker


def processes_with(argument: str) -> list[int]:
    """Pids of live processes whose command line contains `argument` (a leftover check)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "stat").read_text().split()
        except OSError:
            continue
        if argument in cmdline and status[2] != "Z":
            found.append(int(entry.name))
    return found


# --- deployments -------------------------------------------------------------------------

BACKENDS = ["sqlite", "postgres"]


def truncate_all(settings: Settings) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with session_scope(settings) as session:
        session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def backend_settings(
    request: pytest.FixtureRequest, backend: str, data_dir: Path, sqlite_schema: Path, **fields: object
) -> Settings:
    queue = unique_name("aplserve_worker_q")
    if backend == "sqlite":
        shutil.copyfile(sqlite_schema, data_dir / "aplserve.db")
        return Settings(data_dir=data_dir, queue_name=queue, **fields)  # type: ignore[arg-type]
    return Settings(
        data_dir=data_dir,
        database_url=request.getfixturevalue("worker_postgres_url"),
        broker_url=request.getfixturevalue("redis_url"),
        queue_name=queue,
        **fields,  # type: ignore[arg-type]
    )


def release_backend(settings: Settings) -> None:
    close_celery_apps()
    if settings.database_url is not None:
        truncate_all(settings)
        client = redis.Redis.from_url(settings.resolved_broker_url)
        for key in client.scan_iter(f"{settings.queue_name}*"):
            client.delete(key)
        client.close()
    dispose_engines()


# --- rows -----------------------------------------------------------------------------------


def make_owner(settings: Settings, name: str = "tester") -> str:
    with session_scope(settings) as session:
        return get_or_create_owner(session, name).id


def make_dataset(settings: Settings, owner_id: str, write: Callable[[Path], Path], modality: str) -> str:
    """A Dataset row whose stored files `write(directory)` puts in the data dir."""
    with session_scope(settings) as session:
        row = Dataset(
            owner_id=owner_id,
            name="fixture",
            modality=modality,
            format="jsonl",
            num_samples=0,
            labels=[],
            label_counts={},
            label_cardinality=0.0,
            size_bytes=0,
            sha256="0" * 64,
            warnings=[],
        )
        session.add(row)
        session.flush()
        dataset_id = row.id
    directory = write(settings.files.dataset(dataset_id))
    labels = json.loads((directory / "labels.json").read_text())
    samples = (directory / "samples.jsonl").read_text().splitlines()
    with session_scope(settings) as session:
        row = session.get_one(Dataset, dataset_id)
        row.labels, row.num_samples = labels, len(samples)
    return dataset_id


def make_job(
    settings: Settings, owner_id: str, dataset_id: str, spec: dict[str, Any], attempts: int = 0
) -> str:
    """A queued job row, as POST /v1/jobs commits it (without sending the message)."""
    from apl.spec import JobSpec

    full = JobSpec.model_validate({"dataset_id": dataset_id, **spec}).model_dump(mode="json")
    epochs = full["hyperparameters"]["epochs"] or 0  # 0 until a step budget's run says how many
    with session_scope(settings) as session:
        row = Job(
            owner_id=owner_id,
            dataset_id=dataset_id,
            status="queued",
            spec=full,
            progress={"epoch": 0, "epochs": epochs, "step": 0, "steps": 0},
            attempts=attempts,
        )
        session.add(row)
        session.flush()
        return row.id


def job_row(settings: Settings, job_id: str) -> Job:
    with session_scope(settings) as session:
        row = session.get_one(Job, job_id)
        session.expunge(row)
        return row


def wait_for_status(
    settings: Settings, job_id: str, statuses: tuple[str, ...], timeout: float = JOB_TIMEOUT
) -> Job:
    def reached() -> Job | None:
        row = job_row(settings, job_id)
        return row if row.status in statuses else None

    return wait_for(reached, timeout, f"job {job_id} to become one of {statuses}", interval=0.2)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_text_spec(model: str, **hyperparameters: Any) -> dict[str, Any]:
    """A tiny BERT job that learns the keyword dataset in a few seconds."""
    hp = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16, "seed": 0}
    return {"base_model": model, "loss": {"name": "apl"}, "hyperparameters": hp | hyperparameters}


def models_of(settings: Settings, job_id: str) -> list[Any]:
    """The job's Model rows, detached from their session."""
    from sqlalchemy import select

    from core.db.models import Model

    with session_scope(settings) as session:
        rows = session.scalars(select(Model).where(Model.job_id == job_id)).all()
        session.expunge_all()
        return list(rows)


def published_models(settings: Settings, job_id: str) -> tuple[Any, list[Any]]:
    """The job's fine-tuned model row and all its model rows.

    A job publishes its fine-tuned model and, when the linear probe beat it on validation
    (as it may on the tests' tiny data), the probe too (issue 23); never two of a kind.
    """
    rows = models_of(settings, job_id)
    kinds = sorted(str((row.metrics or {}).get("kind", "fine_tuned")) for row in rows)
    assert kinds in (["fine_tuned"], ["fine_tuned", "linear_probe"]), kinds
    (fine_tuned,) = [row for row in rows if (row.metrics or {}).get("kind", "fine_tuned") == "fine_tuned"]
    return fine_tuned, rows
