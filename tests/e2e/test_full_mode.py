"""Full mode without Docker: the compose file's commands on PostgreSQL and Redis.

`aplserve migrate`, then `aplserve serve --no-worker` and two `aplserve worker`
processes (exactly what docker-compose.yml runs), sharing one data dir as the
compose services share their volume. Several jobs are submitted at once with the
Python client; both workers must take jobs, no job may run twice, all must succeed.
Who ran what comes from each worker's own log ("job <id> claimed"), the job row
says how many claims there were (attempts).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from aplserve.cli import app
from aplserve.client import Client, Job
from tests.apl.synthetic import write_tiny_bert
from tests.client.data import tiny_text_job, write_text_csv
from tests.client.processes import (
    APLSERVE,
    Service,
    base_env,
    create_key,
    free_port,
    start,
    wait_until_healthy,
)
from tests.services import unique_name

ROOT = Path(__file__).resolve().parents[2]
JOBS = 4
CLAIMED = re.compile(r"job ([0-9a-f-]{36}) claimed \(attempt (\d+)\)")


def compose_command(service: str) -> list[str]:
    """The service's command from docker-compose.yml, without the console script's name."""
    config = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = config["services"][service]["command"]
    assert command[0] == "aplserve"
    return [str(part) for part in command[1:]]


@dataclass
class Deployment:
    url: str
    key: str
    api: Service
    workers: list[Service]


@pytest.fixture
def private_database(postgres_url: str) -> Iterator[str]:
    """A database of its own on the session's server: three processes write to it at once."""
    server = make_url(postgres_url)
    name = unique_name("aplserve_full")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _wait_for_log(service: Service, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in service.log_text():
        if service.process.poll() is not None:
            raise AssertionError(f"{service.name} exited:\n{service.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{service.name} never logged {needle!r}:\n{service.log_text()}")
        time.sleep(0.3)


@pytest.fixture
def deployment(private_database: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    queue = unique_name("aplserve_full_q")
    env = base_env(
        APLSERVE_DATABASE_URL=private_database,
        APLSERVE_BROKER_URL=redis_url,
        APLSERVE_QUEUE_NAME=queue,
        APLSERVE_DATA_DIR=str(tmp_path / "data"),  # the compose file's shared /data volume
    )
    migrate = subprocess.run(
        [APLSERVE, *compose_command("migrate")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    key = create_key(env, "full-mode")
    port = free_port()
    api_args = compose_command("api")
    api_args[api_args.index("--host") + 1] = "127.0.0.1"
    api_args[api_args.index("--port") + 1] = str(port)
    assert "--no-worker" in api_args
    services: list[Service] = []
    try:
        services.append(start("api", api_args, env, tmp_path))
        for index in range(2):
            services.append(start(f"worker-{index}", compose_command("worker"), env, tmp_path))
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(services[0], url)
        for worker in services[1:]:
            _wait_for_log(worker, "aplserve worker ready", timeout=120)
            worker.remember_groups()
        yield Deployment(url, key, services[0], services[1:])
    finally:
        for service in services:
            service.stop()
        client = redis.Redis.from_url(redis_url)
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()


def _claims(worker: Service) -> list[tuple[str, int]]:
    return [(job_id, int(attempt)) for job_id, attempt in CLAIMED.findall(worker.log_text())]


def test_two_workers_share_the_jobs_and_none_runs_twice(deployment: Deployment, tmp_path: Path) -> None:
    tiny_bert = write_tiny_bert(tmp_path / "tiny-bert")
    with Client(deployment.url, deployment.key) as client:
        dataset = client.datasets.upload(write_text_csv(tmp_path / "keywords.csv"))

        def submit(seed: int) -> Job:
            return client.jobs.create(dataset.id, **tiny_text_job(tiny_bert, epochs=2, seed=seed))

        with ThreadPoolExecutor(JOBS) as pool:  # submitted at once
            submitted = list(pool.map(submit, range(JOBS)))
        # The answer shows the job as it is when the answer is made: an idle worker may have it already.
        assert all(job.status in ("queued", "running") for job in submitted), [j.status for j in submitted]
        with ThreadPoolExecutor(JOBS) as pool:
            finished: list[Job] = list(pool.map(lambda job: client.jobs.wait(job.id, timeout=240), submitted))
        models = {m.id for m in client.models.iterate()}

    for job in finished:
        logs = [worker.log_text()[-3000:] for worker in deployment.workers]
        assert job.status == "succeeded", (job.id, job.error, logs)
        assert job.attempts == 1 and job.model_id in models
    ids = {job.id for job in submitted}
    claims = {worker.name: _claims(worker) for worker in deployment.workers}
    every = [job_id for worker_claims in claims.values() for job_id, _ in worker_claims]
    assert sorted(every) == sorted(ids), claims  # each job claimed exactly once, by one worker
    assert all(attempt == 1 for worker_claims in claims.values() for _, attempt in worker_claims)
    assert all(worker_claims for worker_claims in claims.values()), f"a worker took no job: {claims}"

    # The CLI reads the same deployment through APLSERVE_URL / APLSERVE_API_KEY.
    cli = CliRunner(env={"APLSERVE_URL": deployment.url, "APLSERVE_API_KEY": deployment.key})
    listed = cli.invoke(app, ["jobs", "list", "--status", "succeeded", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {job["id"] for job in json.loads(listed.stdout)} == ids
    watched = cli.invoke(app, ["jobs", "watch", submitted[0].id])
    assert watched.exit_code == 0 and f"job {submitted[0].id}: succeeded" in watched.stdout
