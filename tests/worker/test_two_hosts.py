"""Two hosts and one bucket: an API process and worker processes whose data dirs differ share only
PostgreSQL, Redis and a real S3 server (SeaweedFS `weed mini`) through APLSERVE_STORAGE_URL=s3://.

Upload, train, SIGKILL the worker mid-job, resume from the checkpoint in the bucket on a worker
with yet another data dir, predict, delete (the objects go with their owners). Then the faults:
the S3 server stopped mid-job and for an upload, a predict and /readyz."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.s3server import BUCKET, WeedServer, start_weed
from tests.services import unique_name
from tests.worker.harness import (
    ServiceProcess,
    free_port,
    release_backend,
    service_env,
    start_worker,
    wait_for,
)

#: Each test starts an API, one or two workers (and one its own S3 server) and trains: on the
#: shared 2-core machine that can pass the suite's 300 s default.
pytestmark = pytest.mark.timeout(600)

LEASE_SECONDS = 3
KEYWORDS = {"red": ["apple", "cherry"], "green": ["grass", "leaf"], "blue": ["sky", "sea"]}


def _write_csv(path: Path, n: int = 96) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "labels"])
        names = list(KEYWORDS)
        for i in range(n):
            chosen = [name for j, name in enumerate(names) if (i >> j) & 1] or [names[i % 3]]
            words = ["some", "words", *(KEYWORDS[name][i % 2] for name in chosen)]
            writer.writerow([" ".join(words), "|".join(chosen)])
    return path


@dataclass
class Hosts:
    root: Path
    settings: Settings
    storage_env: dict[str, str]
    api: ServiceProcess
    client: httpx.Client
    server: WeedServer
    workers: list[ServiceProcess]

    def start_worker(self, name: str) -> ServiceProcess:
        settings = self.settings.model_copy(update={"data_dir": self.root / name})
        settings.data_dir.mkdir()
        worker = start_worker(settings, self.root / f"{name}.log", **self.storage_env)
        self.workers.append(worker)
        return worker

    def objects(self) -> list[str]:
        prefix = self.storage_env["APLSERVE_STORAGE_URL"].split("/", 3)[3] + "/"
        response = httpx.get(f"{self.server.endpoint}/{BUCKET}", params={"list-type": "2", "prefix": prefix})
        return [part.split("</Key>")[0] for part in response.text.split("<Key>")[1:]]

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/jobs/{job_id}").json())

    def wait_job(self, job_id: str, statuses: tuple[str, ...], timeout: float = 240) -> dict[str, Any]:
        return wait_for(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout,
            f"job in {statuses}",
            0.5,
        )


def _hosts(root: Path, server: WeedServer, database_url: str, broker_url: str, **env: str) -> Hosts:
    storage_env = {**server.storage_env(), "HF_HUB_OFFLINE": "1", **env}
    settings = Settings(
        data_dir=root / "api",
        database_url=database_url,
        broker_url=broker_url,
        queue_name=unique_name("aplserve_two_hosts_q"),
        job_lease_seconds=LEASE_SECONDS,
        auth_enabled=False,
    )
    settings.data_dir.mkdir(parents=True)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "aplserve.cli",
        "serve",
        "--no-worker",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    api = ServiceProcess(command, service_env(settings, **storage_env), root / "api.log")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def healthy() -> bool:
        assert api.alive(), api.log()[-3000:]
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 120, "the API's /healthz", 0.3)
    return Hosts(root, settings, storage_env, api, client, server, [])


@pytest.fixture
def hosts(tmp_path: Path, s3_server: WeedServer, worker_postgres_url: str, redis_url: str) -> Iterator[Hosts]:
    current = _hosts(tmp_path, s3_server, worker_postgres_url, redis_url)
    try:
        yield current
    finally:
        _close(current)


def _close(hosts: Hosts) -> None:
    hosts.client.close()
    for process in [hosts.api, *hosts.workers]:
        process.close()
    release_backend(hosts.settings)


def _upload(hosts: Hosts) -> dict[str, Any]:
    csv_path = _write_csv(hosts.root / "tags.csv")
    response = hosts.client.post(
        "/v1/datasets", files={"file": ("tags.csv", csv_path.read_bytes(), "text/csv")}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _start_job(hosts: Hosts, dataset_id: str, model: str, epochs: int) -> str:
    hp = {"epochs": epochs, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16, "seed": 0}
    body = {"dataset_id": dataset_id, "base_model": model, "loss": {"name": "apl"}, "hyperparameters": hp}
    response = hosts.client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_for_checkpoint(hosts: Hosts, job_id: str) -> str:
    """The job's checkpoint key, once a worker has stored one."""
    checkpoint = f"checkpoints/{job_id}/last.ckpt"
    wait_for(
        lambda: any(key.endswith(checkpoint) for key in hosts.objects()),
        240,
        "a checkpoint in the bucket",
        0.2,
    )
    return checkpoint


def _local_files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_upload_train_crash_resume_predict_delete_across_hosts(hosts: Hosts, tiny_bert: str) -> None:
    dataset = _upload(hosts)
    assert [key.split("/", 1)[1] for key in hosts.objects()] == [f"datasets/{dataset['id']}.tar"]
    assert _local_files(hosts.root / "api") == []  # the API kept no copy: the bucket has it

    first = hosts.start_worker("worker-1")
    job_id = _start_job(hosts, dataset["id"], tiny_bert, epochs=8)
    checkpoint = _wait_for_checkpoint(hosts, job_id)
    first.kill()  # SIGKILL mid-job: the worker's data dir is lost with its host

    second = hosts.start_worker("worker-2")
    job = hosts.wait_job(job_id, ("succeeded", "failed"))
    assert job["status"] == "succeeded", (job, second.log()[-3000:])
    assert f"job {job_id} resumes from its last checkpoint" in second.log()
    model_id = job["model_id"]
    assert not any(key.endswith(checkpoint) for key in hosts.objects())  # discarded once the job ended
    assert any(model_id in key for key in hosts.objects())

    predicted = hosts.client.post(f"/v1/models/{model_id}/predict", json={"inputs": ["apple sky", "leaf"]})
    assert predicted.status_code == 200 and len(predicted.json()["predictions"]) == 2, predicted.text
    assert f"artifacts/{model_id}.tar" in _local_files(hosts.root / "api" / "cache")
    assert not (hosts.root / "worker-2" / "scratch" / "artifacts" / f"{model_id}.tar").exists()

    onnx = hosts.client.get(f"/v1/models/{model_id}/artifact", params={"format": "onnx"})
    assert onnx.status_code == 200 and onnx.content[:2] == b"PK", onnx.text[:500]
    assert any(key.endswith(f"artifacts/{model_id}.onnx.zip") for key in hosts.objects())  # any API host

    assert hosts.client.delete(f"/v1/models/{model_id}").status_code == 204
    assert hosts.client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    left = [key for key in hosts.objects() if model_id in key or dataset["id"] in key]
    assert left == []
    assert not (hosts.root / "api" / "cache" / "artifacts" / f"{model_id}.tar").exists()


@pytest.fixture
def fragile_hosts(
    tmp_path: Path, worker_postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Hosts]:
    """Hosts on a private S3 server that the test stops; short timeouts so faults answer fast."""
    server = start_weed(tmp_path / "weed")
    env = {"APLSERVE_STORAGE_TIMEOUT_SECONDS": "2", "APLSERVE_STORAGE_MAX_ATTEMPTS": "1"}
    current = _hosts(tmp_path / "hosts", server, worker_postgres_url, redis_url, **env)
    try:
        yield current
    finally:
        _close(current)
        server.stop()


def test_a_stopped_storage_fails_uploads_predicts_readiness_and_the_job_not_forever(
    fragile_hosts: Hosts, tiny_bert: str
) -> None:
    hosts = fragile_hosts
    dataset = _upload(hosts)
    worker = hosts.start_worker("worker")
    trained = hosts.wait_job(_start_job(hosts, dataset["id"], tiny_bert, epochs=1), ("succeeded", "failed"))
    assert trained["status"] == "succeeded", worker.log()[-3000:]
    job_id = _start_job(hosts, dataset["id"], tiny_bert, epochs=40)
    _wait_for_checkpoint(hosts, job_id)

    hosts.server.stop()  # mid-job
    failed = hosts.wait_job(job_id, ("succeeded", "failed"), timeout=120)
    assert failed["status"] == "failed" and failed["error"]["code"] == "storage_unavailable", failed
    assert "storing the checkpoint failed; retrying" in worker.log()

    csv_path = hosts.root / "tags.csv"
    upload = hosts.client.post(
        "/v1/datasets", files={"file": ("tags.csv", csv_path.read_bytes(), "text/csv")}
    )
    assert upload.status_code == 503 and upload.json()["code"] == "storage_unavailable", upload.text
    predict = hosts.client.post(f"/v1/models/{trained['model_id']}/predict", json={"inputs": ["apple"]})
    assert predict.status_code == 503 and predict.json()["code"] == "storage_unavailable", predict.text
    ready = hosts.client.get("/readyz")
    assert (
        ready.status_code == 503 and ready.json()["storage"] != "ok" and "storage" in ready.json()["detail"]
    )
    assert _local_files(hosts.root / "api" / "scratch") == []  # the refused upload left nothing

    hosts.server.start()  # back: everything answers again
    assert hosts.client.get("/readyz").status_code == 200
    predict = hosts.client.post(f"/v1/models/{trained['model_id']}/predict", json={"inputs": ["apple"]})
    assert predict.status_code == 200, predict.text
