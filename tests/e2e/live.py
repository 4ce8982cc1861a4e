"""A live aplserve over HTTP for the end-to-end tests: `aplserve serve` in a subprocess on
a free loopback port, an API key, upload files made in the test, and polling helpers.

Everything goes through the public HTTP contract; the database and data dir are read
only to check what the API does not show (artifact paths, files on disk).
"""

from __future__ import annotations

import io
import json
import random
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from api.auth import create_api_key
from core.db.session import dispose_engines, session_scope
from core.settings import Settings
from tests.apl.synthetic import FILLER, IMAGE_LABELS, TEXT_LABELS
from tests.worker.harness import START_TIMEOUT, ServiceProcess, free_port, service_env, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


class LiveServer:
    """`aplserve serve` (embedded worker unless `worker=False`) for `settings`; restartable."""

    def __init__(self, settings: Settings, log_dir: Path, *, worker: bool = True) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.worker = worker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ServiceProcess | None = None
        self.starts = 0
        self.headers: dict[str, str] = {}

    def start(self) -> None:
        command = [sys.executable, "-m", "aplserve.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        if not self.worker:
            command.append("--no-worker")
        self.starts += 1
        log = self.log_dir / f"serve-{self.starts}.log"
        self.process = ServiceProcess(command, service_env(self.settings), log)
        wait_for(self._healthy, START_TIMEOUT, f"{self.url}/healthz", interval=0.2)
        if self.worker:
            self.process.wait_for_log("aplserve worker ready")
        if not self.headers:
            with session_scope(self.settings) as session:
                _, key = create_api_key(session, "e2e")
            dispose_engines()
            self.headers = {"Authorization": f"Bearer {key}"}

    def _healthy(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise AssertionError(f"aplserve serve exited:\n{self.process.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def log(self) -> str:
        return self.process.log() if self.process else ""

    def stop(self) -> float:
        assert self.process is not None
        return self.process.terminate(timeout=60)

    def close(self) -> None:
        if self.process is not None:
            self.process.close()


def text_csv(rows: int = 48, seed: int = 0) -> bytes:
    """An easy keyword dataset in the upload CSV format: each label has its own words."""
    rng = random.Random(seed)
    labels = sorted(TEXT_LABELS)
    lines = ["text,labels"]
    for i in range(rows):
        chosen = [name for name in labels if rng.random() < 0.4] or ([labels[i % 3]] if i % 5 else [])
        words = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(TEXT_LABELS[n]) for n in chosen]
        rng.shuffle(words)
        lines.append(f'"{" ".join(words)}",{"|".join(chosen)}')
    return ("\n".join(lines) + "\n").encode()


def image_zip(count: int = 24, size: int = 32, seed: int = 0) -> bytes:
    """Coloured squares in fixed quadrants, one per label, in the upload ZIP format."""
    rng = np.random.default_rng(seed)
    names = sorted(IMAGE_LABELS)
    half = size // 2
    buffer = io.BytesIO()
    rows = ["filename,labels"]
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            chosen = [n for n in names if rng.random() < 0.45] or [names[i % len(names)]]
            pixels = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
            for name in chosen:
                quadrant, colour = IMAGE_LABELS[name]
                y, x = divmod(quadrant, 2)
                pixels[y * half : (y + 1) * half, x * half : (x + 1) * half] = colour
            png = io.BytesIO()
            Image.fromarray(pixels).save(png, format="PNG")
            archive.writestr(f"img/{i:03d}.png", png.getvalue())
            rows.append(f"img/{i:03d}.png,{'|'.join(chosen)}")
        archive.writestr("labels.csv", "\n".join(rows) + "\n")
    return buffer.getvalue()


def upload(client: httpx.Client, content: bytes, filename: str) -> dict[str, Any]:
    response = client.post("/v1/datasets", files={"file": (filename, content, "application/octet-stream")})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def post_job(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_job(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        return job if job["status"] in statuses else None

    return wait_for(reached, timeout, f"job {job_id} to become one of {statuses}", interval=0.2)


def series(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/metrics")
    assert response.status_code == 200, response.text
    points: list[dict[str, Any]] = response.json()["series"]
    return points


def elapsed_since(started: float) -> float:
    return time.monotonic() - started


def pretty(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)[:3000]
