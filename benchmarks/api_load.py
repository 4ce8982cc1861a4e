"""Load test of the job routes: many concurrent clients on a job's status, its metrics and the job list.

Usage: .venv/bin/python benchmarks/api_load.py [--mode embedded|full|both] [--clients 32,128,256]
       [--seconds 20] [--owners 8] [--jobs 20] [--points 10] [--api-processes 1] [--api-threads N]
       [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/0]

What it does, all on this machine and loopback only, bounded in clients (at most 1024) and
time (at most 120 s a run):
1. starts `aplserve serve` on a free 127.0.0.1 port: `embedded` is the default deployment
   (SQLite, the server-less broker, the embedded worker), `full` is `--no-worker` on a fresh
   PostgreSQL database (created here, dropped at the end) with Redis as the broker;
2. writes `--owners` owners with an API key each, and per owner `--jobs` finished jobs with
   `--points` metric points each (rows only: nothing trains);
3. for each client count: that many clients, each on its own keep-alive connection and with
   its own owner's key, send GET /v1/jobs/{id}, GET /v1/jobs/{id}/metrics and GET /v1/jobs
   in turn, the next request when the previous answer is back, for `--seconds`; meanwhile a
   probe asks GET /healthz every 100 ms on a connection of its own;
4. prints requests/s, p50/p99/max latency and errors (any answer but 200, or no answer within
   30 s) per client count, the probe's p99 and max, and the server's CPU time per answered
   request (all its processes; unlike latency it hardly depends on what else the machine
   runs, so compare builds by it).

The clients run in this process and share the CPU with the server; on the 2-core
machine of the project that is a third of the work, so the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server import Server, running  # noqa: E402  (needs ROOT on the path)

MAX_CLIENTS = 1024
MAX_SECONDS = 120.0
REQUEST_TIMEOUT = 30.0
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Result:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    probe: list[float] = field(default_factory=list)
    #: CPU seconds the server's processes used during the run (benchmarks.server.Server.cpu_seconds).
    server_cpu: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies if values is None else values) or [0.0]
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    def row(self) -> dict[str, float | int | str]:
        cpu = {"server_cpu_ms_per_request": round(1000 * self.server_cpu / max(1, self.requests), 2)}
        return {
            "clients": self.clients,
            "requests": self.requests,
            "req_s": round(self.rps, 1),
            "p50_ms": round(self.quantile_ms(0.5), 1),
            "p99_ms": round(self.quantile_ms(0.99), 1),
            "max_ms": round(self.quantile_ms(1.0), 1),
            "errors": self.error_count,
            "error_kinds": ", ".join(f"{k} x{v}" for k, v in self.errors.most_common()) or "-",
            "healthz_p99_ms": round(self.quantile_ms(0.99, self.probe), 1),
            "healthz_max_ms": round(self.quantile_ms(1.0, self.probe), 1),
            **(cpu if self.server_cpu else {}),  # measured by `measure`, not by every caller
        }


class Connection:
    """A minimal HTTP/1.1 keep-alive GET client: the load generator must cost little CPU."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}\r\n".encode())
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass(frozen=True)
class Target:
    """One owner's key and the ids of its jobs."""

    key: str
    job_ids: list[str]

    def paths(self) -> list[str]:
        paths = []
        for job_id in self.job_ids:
            paths += [f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/metrics", "/v1/jobs?limit=20"]
        return paths


async def _client(host: str, port: int, target: Target, offset: int, stop_at: float, result: Result) -> None:
    connection = Connection(host, port)
    headers = f"Authorization: Bearer {target.key}\r\n"
    paths = target.paths()
    sent = offset
    try:
        while time.perf_counter() < stop_at:
            path = paths[sent % len(paths)]
            sent += 1
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.get(path, headers), REQUEST_TIMEOUT)
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                result.errors[type(error).__name__] += 1
                await connection.close()
                continue
            if status == 200:
                result.latencies.append(time.perf_counter() - started)
            else:
                result.errors[f"HTTP {status}"] += 1
    finally:
        await connection.close()


async def _probe(host: str, port: int, stop_at: float, result: Result) -> None:
    connection = Connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            with contextlib.suppress(Exception):
                if await asyncio.wait_for(connection.get("/healthz", ""), REQUEST_TIMEOUT) == 200:
                    result.probe.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def _run(base: str, targets: list[Target], clients: int, seconds: float) -> Result:
    host, port = base.removeprefix("http://").split(":")
    result = Result(clients=clients, seconds=seconds)
    stop_at = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(
        _probe(host, int(port), stop_at, result),
        *(
            _client(host, int(port), targets[i % len(targets)], i * 7, stop_at, result)
            for i in range(clients)
        ),
    )
    result.seconds = time.perf_counter() - began
    return result


def run_load(base: str, targets: list[Target], clients: int, seconds: float) -> Result:
    """`clients` concurrent clients on the job routes of `base` (loopback only) for `seconds`."""
    if not base.startswith("http://127.0.0.1:"):
        raise ValueError("the load test only drives a server on 127.0.0.1")
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"at most {MAX_CLIENTS} clients and {MAX_SECONDS:.0f} s a run")
    return asyncio.run(_run(base, targets, clients, seconds))


# --- the server and its rows ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    data_dir: Path, database_url: str | None, broker_url: str | None, queue: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
    env |= {
        "APLSERVE_DATA_DIR": str(data_dir),
        "APLSERVE_QUEUE_NAME": queue,
        "APLSERVE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    if database_url:
        env["APLSERVE_DATABASE_URL"] = database_url
    if broker_url:
        env["APLSERVE_BROKER_URL"] = broker_url
    return env


@contextlib.contextmanager
def serve(env: dict[str, str], *, worker: bool, log_path: Path, processes: int = 1) -> Iterator[Server]:
    """`aplserve serve` on a free loopback port in its own process group; always stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "aplserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if not worker:
        command.append("--no-worker")
    if processes > 1:
        command += ["--workers", str(processes)]
    with log_path.open("ab") as log, running(command, env, port, log=log) as server:
        yield server


def seed(env: dict[str, str], owners: int, jobs: int, points: int) -> list[Target]:
    """Owners with a key each, and finished jobs with metric points (rows only)."""
    from api.auth import create_api_key
    from core.db.models import Dataset, Job, MetricPoint
    from core.db.session import dispose_engines, session_scope
    from core.settings import Settings

    settings = Settings(
        data_dir=Path(env["APLSERVE_DATA_DIR"]),
        database_url=env.get("APLSERVE_DATABASE_URL"),
        broker_url=env.get("APLSERVE_BROKER_URL"),
    )
    spec = {"dataset_id": "", "base_model": "minilm-l6", "loss": {"name": "apl"}, "hyperparameters": {}}
    from apl.spec import JobSpec

    targets = []
    start = datetime.now(UTC) - timedelta(hours=1)
    for index in range(owners):
        with session_scope(settings) as session:
            owner, key = create_api_key(session, f"load-{index}")
            dataset = _dataset(Dataset, owner.id)
            session.add(dataset)
            session.flush()
            full = JobSpec.model_validate(spec | {"dataset_id": dataset.id}).model_dump(mode="json")
            ids = []
            for number in range(jobs):
                job = _job(Job, owner.id, dataset.id, full, start + timedelta(seconds=number), points)
                session.add(job)
                session.flush()
                session.add_all(_points(MetricPoint, job.id, points))
                ids.append(job.id)
        targets.append(Target(key, ids))
    dispose_engines()
    return targets


def _dataset(model: type, owner_id: str) -> object:
    return model(
        owner_id=owner_id, name="load", modality="text", format="csv", num_samples=100,
        labels=["a", "b"], label_counts={"a": 50, "b": 50}, label_cardinality=1.0,
        size_bytes=1000, sha256="0" * 64, warnings=[],
    )  # fmt: skip


def _job(
    model: type, owner_id: str, dataset_id: str, spec: dict[str, object], at: datetime, epochs: int
) -> object:
    return model(
        owner_id=owner_id, dataset_id=dataset_id, status="succeeded", spec=spec,
        progress={"epoch": epochs, "epochs": epochs, "step": 10 * epochs, "steps": 10 * epochs},
        best_metrics={"map": 0.7, "micro_f1": 0.6, "macro_f1": 0.5, "epoch": epochs},
        attempts=1, created_at=at, started_at=at, finished_at=at + timedelta(seconds=30),
    )  # fmt: skip


def _points(model: type, job_id: str, count: int) -> list[object]:
    return [
        model(
            job_id=job_id,
            epoch=epoch,
            step=10 * epoch,
            train_loss=0.5,
            val_loss=0.6,
            map=0.7,
            micro_f1=0.6,
            macro_f1=0.5,
            per_class_ap={"a": 0.7, "b": 0.7},
            time_s=1.5,
        )
        for epoch in range(1, count + 1)
    ]


@contextlib.contextmanager
def deployment(mode: str, work: Path, postgres_admin: str, redis_url: str) -> Iterator[dict[str, str]]:
    """The environment of an embedded or a full deployment; the full one's database is dropped after."""
    queue = f"aplserve_load_{uuid.uuid4().hex[:12]}"
    data_dir = work / mode
    data_dir.mkdir()
    if mode == "embedded":
        yield server_env(data_dir, None, None, queue)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_admin)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    name = queue
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        yield server_env(data_dir, url, redis_url, queue)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def measure(args: argparse.Namespace, mode: str, work: Path) -> list[Result]:
    results = []
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(deployment(mode, work, args.postgres_url, args.redis_url))
        if args.api_threads is not None:
            env["APLSERVE_API_THREADS"] = str(args.api_threads)
        log_path = work / f"{mode}.log"
        processes = args.api_processes if mode == "full" else 1
        server = stack.enter_context(
            serve(env, worker=mode == "embedded", log_path=log_path, processes=processes)
        )
        targets = seed(env, args.owners, args.jobs, args.points)
        run_load(server.base, targets, 8, 2.0)  # warm-up: connections, caches, the pool
        for clients in args.clients:
            cpu_before = server.cpu_seconds()
            result = run_load(server.base, targets, clients, args.seconds)
            result.server_cpu = server.cpu_seconds() - cpu_before
            results.append(result)
            print(json.dumps({"mode": mode, **result.row()}), flush=True)
    return results


def table(rows: list[tuple[str, Result]]) -> str:
    lines = [
        "| mode | clients | req/s | p50 ms | p99 ms | max ms | errors | /healthz p99 ms "
        "| server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, result in rows:
        row = result.row()
        lines.append(
            f"| {mode} | {row['clients']} | {row['req_s']} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row['max_ms']} | {row['errors']} | {row['healthz_p99_ms']} | "
            f"{row.get('server_cpu_ms_per_request', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "full", "both"], default="both")
    parser.add_argument(
        "--clients", default="32,128,256", type=lambda text: [int(n) for n in text.split(",")]
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--owners", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("APLSERVE_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--api-processes", type=int, default=1, help="full mode: API processes (aplserve serve --workers N)"
    )
    parser.add_argument(
        "--api-threads", type=int, default=None, help="APLSERVE_API_THREADS of the server (default: its own)"
    )
    args = parser.parse_args()
    modes = ["embedded", "full"] if args.mode == "both" else [args.mode]
    work = Path(tempfile.mkdtemp(prefix="aplserve-load-"))
    rows: list[tuple[str, Result]] = []
    try:
        for mode in modes:
            rows += [(mode, result) for result in measure(args, mode, work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows))


if __name__ == "__main__":
    main()
