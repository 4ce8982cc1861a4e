"""What the service costs on top of the bare training loop, and training throughput through it.

Starts `aplserve serve` (embedded worker, SQLite, SQLAlchemy broker) on a fresh data dir,
uploads the demo datasets over HTTP and runs one-epoch jobs. Each service job is paired
with the bare `apl.training.train` on the same stored dataset, base model and
hyperparameters in this process (same number of torch threads), runs interleaved, best
of `--repeats` because the CPU may be shared. Two comparisons:

    epoch      the epoch's `time_s` (training steps + validation), as the metric point
               reports it, against the bare loop's own `time_s`
    job        started_at -> finished_at of the job (model build, training, checkpoint,
               artifact publish, database writes) against the wall time of the bare
               train() + publish_result() for the same work

Then the training throughput of minilm-l6 on the demo movie titles and mobilenetv2-100
on the demo digit mosaics through the service (train samples / epoch time_s; the epoch
time includes its validation pass).

    .venv/bin/python benchmarks/service_overhead.py [--repeats 2] [--image-size 224]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from api.auth import create_api_key
from apl.artifacts import publish_result
from apl.data import load_stored_dataset, split_indices
from apl.spec import JobSpec
from apl.training import TrainConfig, train
from aplserve.demo_data import MOSAICS_ZIP, MOVIES_CSV, write_demo_data
from core.db.session import dispose_engines, session_scope
from core.settings import Settings


@dataclass
class Run:
    epoch_s: float
    job_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
        env["APLSERVE_DATA_DIR"] = str(data_dir)
        env["APLSERVE_LOG_LEVEL"] = "warning"
        self.log = (data_dir.parent / "serve.log").open("wb")
        command = [sys.executable, "-m", "aplserve.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_healthy()
        with session_scope(Settings(data_dir=data_dir)) as session:
            _, key = create_api_key(session, "benchmark")
        dispose_engines()
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("aplserve serve exited; see serve.log")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("aplserve serve did not answer /healthz")

    def upload(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as handle:
            response = self.client.post("/v1/datasets", files={"file": (path.name, handle)})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def run_job(self, spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        response = self.client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        job_id = response.json()["id"]
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
                series = self.client.get(f"/v1/jobs/{job_id}/metrics").json()["series"]
                return job, series
            time.sleep(0.5)
        raise RuntimeError(f"job {job_id} did not finish")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def service_run(service: Service, spec: dict[str, Any]) -> Run:
    job, series = service.run_job(spec)
    return Run(epoch_s=float(series[0]["time_s"]), job_s=_seconds(job["started_at"], job["finished_at"]))


def bare_run(dataset_dir: Path, spec: dict[str, Any], scratch: Path) -> Run:
    config = TrainConfig.from_job_spec(JobSpec.model_validate(spec), dataset_dir)
    started = time.monotonic()
    result = train(config)
    publish_result(result, scratch / "bare-model.tar")
    return Run(epoch_s=result.history[0].time_s, job_s=time.monotonic() - started)


def num_train(dataset_dir: Path, spec: dict[str, Any]) -> int:
    hp = JobSpec.model_validate(spec).hyperparameters
    train_idx, _ = split_indices(load_stored_dataset(dataset_dir).targets, hp.val_fraction, hp.seed)
    return len(train_idx)


def overhead(service_s: float, bare_s: float) -> str:
    return f"{100 * (service_s - bare_s) / bare_s:+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aplserve-bench-") as tmp:
        root = Path(tmp)
        demo = root / "demo"
        write_demo_data(demo)
        service = Service(root / "var")
        try:
            movies = service.upload(demo / MOVIES_CSV)
            digits = service.upload(demo / MOSAICS_ZIP)
            hp = {"epochs": 1, "batch_size": args.batch_size, "seed": 0}
            text_spec = {
                "dataset_id": movies["id"],
                "base_model": "minilm-l6",
                "loss": {"name": "apl"},
                "hyperparameters": hp | {"max_length": 64},
            }
            image_spec = {
                "dataset_id": digits["id"],
                "base_model": "mobilenetv2-100",
                "loss": {"name": "apl"},
                "hyperparameters": hp | {"image_size": args.image_size, "learning_rate": 1e-3},
            }
            text_dir = root / "var" / "datasets" / movies["id"]
            image_dir = root / "var" / "datasets" / digits["id"]

            service_run(
                service, text_spec
            )  # warm-up: the first job of a worker loads files into the page cache
            services, bares = [], []
            for _ in range(args.repeats):
                services.append(service_run(service, text_spec))
                bares.append(bare_run(text_dir, text_spec, root))
            image_runs = [service_run(service, image_spec) for _ in range(args.repeats)]
            text_n, image_n = num_train(text_dir, text_spec), num_train(image_dir, image_spec)
        finally:
            service.stop()

    best_service = Run(min(r.epoch_s for r in services), min(r.job_s for r in services))
    best_bare = Run(min(r.epoch_s for r in bares), min(r.job_s for r in bares))
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs; best of {args.repeats}")
    print()
    print("minilm-l6, demo movies (1 epoch, batch 32, max_length 64, apl loss)")
    print(f"| {'measurement':<44} | {'service':>9} | {'bare':>9} | {'overhead':>8} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|{'-' * 10}|")
    rows = [
        ("epoch time_s (train steps + validation)", best_service.epoch_s, best_bare.epoch_s),
        ("job: started->finished vs train()+publish", best_service.job_s, best_bare.job_s),
    ]
    for name, svc, bare in rows:
        print(f"| {name:<44} | {svc:>8.2f}s | {bare:>8.2f}s | {overhead(svc, bare):>8} |")
    print()
    print("training throughput through the service (train samples / epoch time_s, best run)")
    image_epoch = min(r.epoch_s for r in image_runs)
    print(f"| {'model / dataset':<44} | {'samples':>9} | {'epoch':>9} | {'samples/s':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    text_row = "minilm-l6 / movies (max_length 64)"
    image_row = f"mobilenetv2-100 / digit mosaics ({args.image_size} px)"
    for name, samples, seconds in (
        (text_row, text_n, best_service.epoch_s),
        (image_row, image_n, image_epoch),
    ):
        print(f"| {name:<44} | {samples:>9} | {seconds:>8.2f}s | {samples / seconds:>9.1f} |")


if __name__ == "__main__":
    main()
