"""A full disk and a server killed mid-upload, on a real server process.

The data dir is a small tmpfs of the server's own (tests/reliability/faults.py: a private
mount namespace, so the kernel's ENOSPC is real and the mount ends with the process);
the database and the broker live outside it, as a deployment's database would.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import assert_problem
from tests.reliability.faults import free_bytes, on_a_tmpfs, open_files_under, seen_by
from tests.reliability.servers import Server, outside_settings
from tests.worker.harness import wait_for

MIB = 1024 * 1024
TMPFS_BYTES = 2 * MIB


def _csv(size: int) -> bytes:
    """A valid text dataset of about `size` bytes (12 distinct lines, repeated)."""
    head = b"text,labels\n"
    rows = [
        f"sample number {i} with some words in it,{'a' if i % 2 else 'b'}|c\n".encode() for i in range(12)
    ]
    body = bytearray(head)
    index = 0
    while len(body) < size:
        body += rows[index % 12]
        index += 1
    return bytes(body)


def _upload(server: Server, headers: dict[str, str], content: bytes) -> object:
    with server.client(headers) as client:
        return client.post("/v1/datasets", files={"file": ("data.csv", content, "text/csv")})


@pytest.fixture
def full_disk_server(tmp_path: Path) -> Iterator[Server]:
    settings = outside_settings(tmp_path)
    server = Server(settings, tmp_path / "logs", tmpfs_bytes=TMPFS_BYTES)
    try:
        assert on_a_tmpfs(server.pid, settings.data_dir)
        yield server
    finally:
        server.close()


def test_a_full_disk_answers_507_and_keeps_no_file_open(full_disk_server: Server) -> None:
    server = full_disk_server
    data_dir = server.settings.data_dir
    headers = server.key()
    empty = free_bytes(server.pid, data_dir)

    # The upload itself does not fit: the write fails while the body streams in.
    response = _upload(server, headers, _csv(3 * MIB))
    assert_problem(response, 507, "storage_full")
    # The upload fits, but not its normalized copy: ingest fails with the upload on disk.
    response = _upload(server, headers, _csv(1200 * 1024))
    assert_problem(response, 507, "storage_full")

    # Nothing is left on the disk or held open (a deleted file held open keeps its space).
    assert open_files_under(server.pid, data_dir) == []
    assert list(seen_by(server.pid, data_dir / "uploads").glob("*")) == []
    assert list(seen_by(server.pid, data_dir / "datasets").glob("*")) == []
    assert free_bytes(server.pid, data_dir) >= empty - 64 * 1024
    # And the server goes on: a dataset that fits is stored.
    response = _upload(server, headers, _csv(20 * 1024))
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]


def _start_upload(server: Server, headers: dict[str, str], total: int, sent: int) -> socket.socket:
    """A multipart upload of `total` file bytes of which only `sent` are sent; the socket stays open."""
    boundary = "aplserve-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + total + len(tail)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(request + head + _csv(sent)[:sent])
    return sock


def test_a_server_killed_mid_upload_leaves_partials_that_the_next_start_removes(tmp_path: Path) -> None:
    settings = outside_settings(tmp_path)
    files = settings.files
    server = Server(settings, tmp_path / "logs")
    headers = server.key()
    sock = _start_upload(server, headers, total=4 * MIB, sent=1 * MIB)
    try:
        parts = wait_for(
            lambda: [p for p in files.uploads.glob("*.part") if p.stat().st_size > 512 * 1024],
            30,
            "the partial upload on disk",
        )
        server.kill()  # SIGKILL: no cleanup of any kind runs
    finally:
        sock.close()
        server.close()
    # What an ingest killed half way leaves: its hidden staging directory.
    staging = files.datasets / ".0b8d7c8e-dead-4bad-9f00-000000000000.partial-1a2b3c4d"
    (staging / "images").mkdir(parents=True)
    (staging / "samples.jsonl").write_bytes(b"{}\n" * 1000)
    hour_ago = time.time() - 3600
    for path in [*parts, staging, staging / "images", staging / "samples.jsonl"]:
        os.utime(path, (hour_ago, hour_ago))
    fresh = files.uploads / "upload-inflight.part"  # another server's upload in progress: kept
    fresh.write_bytes(b"x" * 1000)

    restarted = Server(settings, tmp_path / "logs", env={"APLSERVE_STALE_FILE_SECONDS": "600"})
    try:
        assert [p for p in parts if p.exists()] == [] and not staging.exists()
        assert fresh.exists()
        log = restarted.log()
        assert all(f"removed stale partial file {p}" in log for p in [*parts, staging])
        assert "removed 2 stale partial file(s)" in log
    finally:
        restarted.close()


# --- the long runs (make reliability): a worker on a full disk, and a worker's own partials --------


@pytest.mark.reliability
def test_a_checkpoint_that_does_not_fit_fails_the_job_with_storage_full(
    tmp_path: Path, tiny_bert: str
) -> None:
    """The dataset fits on the 1 MiB data dir; the first epoch checkpoint (several MB) does not."""
    settings = outside_settings(tmp_path)
    server = Server(settings, tmp_path / "logs", worker=True, tmpfs_bytes=1 * MIB)
    try:
        headers = server.key()
        with server.client(headers) as client:
            from tests.e2e.live import text_csv

            dataset = client.post("/v1/datasets", files={"file": ("d.csv", text_csv(48), "text/csv")})
            assert dataset.status_code == 201, dataset.text
            hp = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16}
            spec = {"dataset_id": dataset.json()["id"], "base_model": tiny_bert, "hyperparameters": hp}
            job = client.post("/v1/jobs", json=spec).json()
            done = wait_for(
                lambda: (body := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "failed" and body,
                240,
                "the job to fail",
                interval=0.5,
            )
        assert done["error"]["code"] == "storage_full", done["error"]
        checkpoints = seen_by(server.pid, settings.data_dir / "checkpoints")
        assert [p for p in checkpoints.rglob("*") if p.is_file()] == []  # no temporary left behind
        assert open_files_under(server.pid, settings.data_dir) == []
    finally:
        server.close()


@pytest.mark.reliability
def test_the_embedded_worker_removes_its_stale_partials_at_start(tmp_path: Path) -> None:
    settings = outside_settings(tmp_path)
    files = settings.files
    (files.checkpoints / "job-1").mkdir(parents=True)
    files.artifacts.mkdir(parents=True)
    left = [
        files.artifacts / ".m1.tar.0123abcd.tmp",  # an archive being packed when the worker died
        files.artifacts / ".m1.tar.staging",  # its staging directory
        files.checkpoints / "job-1" / ".last.ckpt.4567cdef.tmp",  # a checkpoint being written
    ]
    left[0].write_bytes(b"x" * 4096)
    left[1].mkdir()
    left[2].write_bytes(b"x" * 4096)
    kept = files.checkpoints / "job-1" / "last.ckpt"  # a complete checkpoint: resumable, kept
    kept.write_bytes(b"x")
    hour_ago = time.time() - 3600
    for path in [*left, kept]:
        os.utime(path, (hour_ago, hour_ago))
    server = Server(settings, tmp_path / "logs", worker=True)
    try:
        assert [path for path in left if path.exists()] == [] and kept.exists()
        assert "removed 3 stale partial file(s) at start" in server.log()
    finally:
        server.close()
