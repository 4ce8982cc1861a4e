"""A live embedded server (`aplserve serve` in a subprocess, private data dir) shared by the
client and CLI tests, plus the tiny model and dataset files they train on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apl.synthetic import write_tiny_bert
from tests.client.data import write_image_zip, write_text_csv
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
    return write_text_csv(tmp_path_factory.mktemp("uploads") / "keywords.csv")


@pytest.fixture(scope="session")
def image_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_zip(tmp_path_factory.mktemp("uploads") / "squares.zip")


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`aplserve serve` (API + its embedded worker) on SQLite and the server-less broker."""
    data_dir = tmp_path_factory.mktemp("embedded") / "var"
    port = free_port()
    env = base_env(
        APLSERVE_DATA_DIR=str(data_dir),
        APLSERVE_QUEUE_NAME=unique_name("aplserve_embedded"),
        APLSERVE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true",  # the test receivers listen on loopback
    )
    key, other_key = create_key(env, "alice"), create_key(env, "bob")
    service = start("serve", ["serve", "--host", "127.0.0.1", "--port", str(port)], env, data_dir.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(service, url)
        yield LiveServer(url, key, other_key, data_dir, service)
    finally:
        service.stop()
