"""A live embedded server (`aplserve serve` in a subprocess, private data dir) shared by the
client and CLI tests, plus the tiny model and dataset files they train on."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.apl.synthetic import write_image_dataset, write_text_dataset, write_tiny_bert
from tests.client.processes import Service, base_env, create_key, free_port, start, wait_until_healthy
from tests.services import unique_name


@dataclass(frozen=True)
class LiveServer:
    url: str
    key: str
    other_key: str  # a second owner
    data_dir: Path
    service: Service


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic keyword dataset (48 samples, labels animal/color/food) as an upload CSV."""
    root = write_text_dataset(tmp_path_factory.mktemp("text-stored"), n=48)
    path = tmp_path_factory.mktemp("uploads") / "keywords.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "labels"])
        for line in (root / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            writer.writerow([sample["text"], "|".join(sample["labels"])])
    return path


@pytest.fixture(scope="session")
def image_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Coloured-quadrant images (labels red/green/blue) as an upload ZIP with labels.csv."""
    root = write_image_dataset(tmp_path_factory.mktemp("image-stored"), n=32, size=32)
    path = tmp_path_factory.mktemp("uploads") / "squares.zip"
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["filename", "labels"])
    with zipfile.ZipFile(path, "w") as archive:
        for line in (root / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            name = Path(sample["image"]).name
            archive.write(root / sample["image"], name)
            writer.writerow([name, "|".join(sample["labels"])])
        archive.writestr("labels.csv", rows.getvalue())
    return path


def tiny_text_job(tiny_bert: Path, **hyperparameters: Any) -> dict[str, Any]:
    """Arguments for `client.jobs.create` that train in a few seconds on CPU."""
    return {
        "base_model": f"hf:{tiny_bert}",
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 32}
        | hyperparameters,
    }


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`aplserve serve` (API + its embedded worker) on SQLite and the server-less broker."""
    data_dir = tmp_path_factory.mktemp("embedded") / "var"
    port = free_port()
    env = base_env(APLSERVE_DATA_DIR=str(data_dir), APLSERVE_QUEUE_NAME=unique_name("aplserve_embedded"))
    key, other_key = create_key(env, "alice"), create_key(env, "bob")
    service = start("serve", ["serve", "--host", "127.0.0.1", "--port", str(port)], env, data_dir.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(service, url)
        yield LiveServer(url, key, other_key, data_dir, service)
    finally:
        service.stop()
