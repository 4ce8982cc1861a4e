"""Uploads into S3 storage on the real `weed mini`: the body goes into the bucket part by part as
it arrives (never whole in memory, never on the API's disk), the ingest reads it back from the
bucket (a ZIP in one forward pass of ranged reads), and a refused or abandoned upload leaves no
object and no incomplete multipart upload. A bucket over its SeaweedFS quota is refused cleanly."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import time
import tracemalloc
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import ClientDisconnect, Request

from api.ingest import ingest_dataset, receive_upload
from api.main import create_app
from core.broker import close_celery_apps
from core.db.session import dispose_engines
from core.objects import storage_for
from core.s3 import READ_AHEAD_BYTES, UPLOAD_PART_BYTES, S3Storage, S3Upload
from core.settings import Settings
from tests.api.conftest import csv_bytes, make_key
from tests.api.test_ingest_upload import MULTIPART, closing, make_app, part_head, post
from tests.s3server import BUCKET, WeedServer
from tests.services import unique_name

MIB = 1024 * 1024


def _s3(data_dir: Path, env: dict[str, str], **extra: Any) -> S3Storage:
    storage = storage_for(
        Settings(
            data_dir=data_dir,
            storage_url=env["APLSERVE_STORAGE_URL"],
            s3_endpoint_url=env["APLSERVE_S3_ENDPOINT_URL"],
            **extra,
        )
    )
    assert isinstance(storage, S3Storage)
    return storage


def _keys(storage: S3Storage, under: str = "") -> list[str]:
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket, Prefix=storage.key(under)
    )
    return [item["Key"][len(storage.key("")) :] for page in pages for item in page.get("Contents", [])]


def _incomplete(storage: S3Storage) -> list[dict[str, Any]]:
    answer = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.key(""))
    return list(answer.get("Uploads", []))


def _local_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_an_upload_goes_into_the_bucket_part_by_part_as_it_arrives(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    """48 MiB streams through the route: while the body is still arriving, finished parts are
    already in the bucket (an incomplete multipart upload, no object yet); memory peaks at a few
    parts, the API's disk holds nothing, and the object reads back byte for byte."""
    storage = _s3(tmp_path / "api", s3_env)
    size, chunk, seen_mid_way = 48 * MIB, 64 * 1024, {}

    async def body() -> AsyncIterator[bytes]:
        yield part_head("file", "big.csv")
        for sent in range(0, size, chunk):
            if sent == 30 * MIB:  # well past three parts: what is in the bucket already?
                uploads = _incomplete(storage)
                parts = storage.client.list_parts(
                    Bucket=BUCKET, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
                )
                seen_mid_way.update(
                    uploads=len(uploads), parts=len(parts.get("Parts", [])), keys=_keys(storage)
                )
            yield bytes([sent // chunk % 251]) * chunk
        yield closing()

    kept: list[Any] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = post(
            make_app(storage, 64 * MIB, kept), content=body(), headers={"content-type": MULTIPART}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert seen_mid_way == {"uploads": 1, "parts": 3, "keys": []}  # visible only once complete
    assert peak < 3 * UPLOAD_PART_BYTES, f"peak {peak} bytes for a {size} byte upload"
    assert _local_files(tmp_path / "api") == []
    (upload,) = kept
    assert isinstance(upload, S3Upload)
    assert _keys(storage) == [upload.relative] and _incomplete(storage) == []
    head = storage.client.head_object(Bucket=BUCKET, Key=upload.key)
    assert head["ContentLength"] == size and head["ETag"].endswith('-6"')  # 6 parts of ~8 MiB
    digest = hashlib.sha256()
    with upload.open() as stream:
        while block := stream.read(MIB):
            digest.update(block)
    assert digest.hexdigest() == response.json()["sha256"]
    upload.discard()
    assert _keys(storage) == []


def test_a_client_that_disconnects_mid_upload_leaves_no_part_behind(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    storage = _s3(tmp_path / "api", s3_env)
    messages = [
        {"type": "http.request", "body": part_head("file", "a.csv") + bytes(9 * MIB), "more_body": True},
        {"type": "http.disconnect"},
    ]
    started: list[int] = []

    async def receive() -> dict[str, Any]:
        if len(messages) == 1:  # the first part went up before the client vanished
            started.append(len(_incomplete(storage)))
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [(b"content-type", MULTIPART.encode())],
    }
    request = Request(scope, receive)
    with pytest.raises(ClientDisconnect):
        asyncio.run(receive_upload(request, storage, 64 * MIB))
    assert started == [1]
    assert _incomplete(storage) == [] and _keys(storage) == []
    assert _local_files(tmp_path / "api") == []


def _noise_png(side: int = 256) -> bytes:
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _image_zip(count: int) -> tuple[bytes, dict[str, bytes]]:
    """Images stored (not deflated) in archive order; labels.csv lists them in reverse."""
    images = {f"img/{index:03d}.png": _noise_png() for index in range(count)}
    rows = [f"{name},{'odd' if index % 2 else 'even'}" for index, name in enumerate(images)][::-1]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("labels.csv", "filename,labels\n" + "\n".join(rows) + "\n")
        for name, data in images.items():
            archive.writestr(name, data)
    return out.getvalue(), images


def _received(storage: S3Storage, data: bytes) -> S3Upload:
    upload = storage.receive()
    for start in range(0, len(data), 64 * 1024):
        upload.write(data[start : start + 64 * 1024])
        if upload.ready():
            upload.flush()
    upload.finish()
    return upload


@pytest.fixture
def get_requests(tmp_path: Path, s3_env: dict[str, str]) -> Iterator[tuple[S3Storage, list[str]]]:
    """The storage and the Range of every GetObject it sends (botocore's own event hook)."""
    storage = _s3(tmp_path / "api", s3_env)
    ranges: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        ranges.append(str(params.get("Range")))

    storage.client.meta.events.register("before-parameter-build.s3.GetObject", record)
    try:
        yield storage, ranges
    finally:
        storage.client.meta.events.unregister("before-parameter-build.s3.GetObject", record)


def test_a_zip_is_ingested_from_the_bucket_in_one_forward_pass(
    tmp_path: Path, get_requests: tuple[S3Storage, list[str]]
) -> None:
    """labels.csv lists the images in reverse archive order: the images are still read in
    archive order, so the ~24 MiB archive costs a handful of ranged GETs of the read-ahead size
    (one per image, about 100, were they read in labels.csv order), and no local copy."""
    storage, ranges = get_requests
    data, images = _image_zip(120)
    upload = _received(storage, data)
    result = ingest_dataset(upload, "photos.zip", tmp_path / "ds")
    assert result.num_samples == 120 and result.labels == ["even", "odd"]
    samples = (tmp_path / "ds" / "samples.jsonl").read_text().splitlines()
    assert samples[0] == '{"image": "images/img/119.png", "labels": ["odd"]}'  # labels.csv order
    for name, png in images.items():
        assert (tmp_path / "ds" / "images" / name).read_bytes() == png
    assert len(data) > 2 * READ_AHEAD_BYTES
    assert len(ranges) <= len(data) // READ_AHEAD_BYTES + 5, ranges
    assert _local_files(tmp_path / "api") == []
    upload.discard()


@pytest.fixture
def s3_client(
    tmp_path: Path, sqlite_template: Path, s3_env: dict[str, str]
) -> Iterator[tuple[TestClient, Settings]]:
    """The API on SQLite with S3 storage (a fresh prefix of the session's `weed mini`)."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(sqlite_template, data_dir / "aplserve.db")
    settings = Settings(
        data_dir=data_dir,
        queue_name=unique_name("aplserve_test_q"),
        storage_url=s3_env["APLSERVE_STORAGE_URL"],
        s3_endpoint_url=s3_env["APLSERVE_S3_ENDPOINT_URL"],
    )
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client, settings
    finally:
        close_celery_apps()
        dispose_engines()


def test_an_uploaded_csv_leaves_only_its_dataset_in_the_bucket(
    s3_client: tuple[TestClient, Settings],
) -> None:
    client, settings = s3_client
    headers = {"Authorization": f"Bearer {make_key(settings, 'alice')}"}
    response = client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.csv", csv_bytes(), "text/csv")}
    )
    assert response.status_code == 201, response.text
    storage = settings.storage
    assert isinstance(storage, S3Storage)
    assert _keys(storage) == [f"datasets/{response.json()['id']}.tar"] and _incomplete(storage) == []
    assert not (settings.data_dir / "scratch" / "uploads").exists() or not any(
        (settings.data_dir / "scratch" / "uploads").iterdir()
    )


# --- a bucket over its quota ---------------------------------------------------------------


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(1)


@pytest.fixture
def over_quota(s3_server: WeedServer, s3_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A bucket of its own with a 1 MB SeaweedFS quota, filled past it and made read-only by
    `s3.bucket.quota.enforce -apply` (SeaweedFS enforces quotas that way, not on each write)."""
    bucket = f"quota-{uuid.uuid4().hex[:8]}"
    assert httpx.put(f"{s3_server.endpoint}/{bucket}", timeout=10).status_code == 200
    env = {**s3_env, "APLSERVE_STORAGE_URL": f"s3://{bucket}/t"}
    assert "updated quota" in s3_server.shell(f"s3.bucket.quota -name={bucket} -op=set -sizeMB=1")
    filler = httpx.put(f"{s3_server.endpoint}/{bucket}/filler", content=os.urandom(3 * MIB), timeout=30)
    assert filler.status_code == 200

    def read_only() -> bool:
        s3_server.shell("s3.bucket.quota.enforce -apply")  # sizes reach it with the volume heartbeats
        probe = httpx.put(f"{s3_server.endpoint}/{bucket}/probe", content=b"x", timeout=10)
        return probe.status_code != 200

    _until(read_only, 60, "SeaweedFS making the bucket over its quota read-only")
    try:
        yield env
    finally:
        s3_server.shell(f"s3.bucket.quota -name={bucket} -op=remove")


def test_a_bucket_over_its_quota_refuses_the_upload_cleanly(
    tmp_path: Path, sqlite_template: Path, s3_server: WeedServer, over_quota: dict[str, str]
) -> None:
    """SeaweedFS 4.48 answers every write to a bucket over its quota with `500 InternalError`
    ("We encountered an internal error, please try again."; the reason is only in its log), the
    same answer as any other fault of its own: so the API says 503 `storage_unavailable`, fast,
    and keeps nothing; once the quota is lifted the same upload succeeds. (507 `storage_full`
    is answered for servers that name the condition: QuotaExceeded, XMinioStorageFull, 507.)"""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(sqlite_template, data_dir / "aplserve.db")
    settings = Settings(
        data_dir=data_dir,
        queue_name=unique_name("aplserve_test_q"),
        storage_url=over_quota["APLSERVE_STORAGE_URL"],
        s3_endpoint_url=over_quota["APLSERVE_S3_ENDPOINT_URL"],
    )
    storage = settings.storage
    assert isinstance(storage, S3Storage)
    upload = {"file": ("d.csv", csv_bytes(), "text/csv")}
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            headers = {"Authorization": f"Bearer {make_key(settings, 'alice')}"}
            started = time.monotonic()
            refused = client.post("/v1/datasets", headers=headers, files=upload)
            took = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "storage_unavailable" and took < 30
            assert client.get("/v1/datasets", headers=headers).json()["items"] == []
            assert _keys(storage) == [] and _incomplete(storage) == []
            bucket = storage.bucket
            s3_server.shell(f"s3.bucket.quota -name={bucket} -op=remove")  # also clears read-only
            _until(
                lambda: httpx.put(f"{s3_server.endpoint}/{bucket}/probe", content=b"x").status_code == 200,
                30,
                "the bucket becoming writable again",
            )
            accepted = client.post("/v1/datasets", headers=headers, files=upload)
            assert accepted.status_code == 201, accepted.text
    finally:
        close_celery_apps()
        dispose_engines()


def test_a_server_stopped_mid_upload_answers_503_and_the_sweep_clears_the_parts(tmp_path: Path) -> None:
    """The S3 server dies after two parts went up: the upload fails fast with 503
    `storage_unavailable`, nothing is left on the API's disk, and the incomplete multipart
    upload the dead server still holds is aborted by the sweep once it is back."""
    from tests.s3server import start_weed

    server = start_weed(tmp_path / "weed")
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in server.storage_env().items():
                patch.setenv(name, value)
            env = server.storage_env()
            storage = _s3(tmp_path / "api", env, storage_timeout_seconds=2, storage_max_attempts=1)

            async def body() -> AsyncIterator[bytes]:
                yield part_head("file", "big.csv")
                for sent in range(0, 40 * MIB, MIB):
                    if sent == 20 * MIB:
                        server.stop()
                    yield bytes(MIB)
                yield closing()

            started = time.monotonic()
            response = post(make_app(storage, 64 * MIB), content=body(), headers={"content-type": MULTIPART})
            assert response.status_code == 503 and response.json()["code"] == "storage_unavailable"
            assert time.monotonic() - started < 30
            assert _local_files(tmp_path / "api") == []
            server.start()
            assert len(_incomplete(storage)) == 1  # the abort could not reach the dead server
            assert storage.sweep(grace_seconds=0) == 1
            assert _incomplete(storage) == [] and _keys(storage) == []
    finally:
        server.stop()
