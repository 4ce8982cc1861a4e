"""Streaming multipart upload: the file goes into storage hashed and bounded as it arrives, never
into memory whole (a file under the data dir, or an S3 multipart upload part by part on the real
`weed mini`), and every refused upload leaves no partial file or object behind."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect

from api.ingest import receive_upload
from api.ingest.upload import MAX_FIELD_BYTES, sanitize_filename
from api.problems import install_problem_handlers
from core.files import DataFiles
from core.objects import LocalUpload, Storage, UploadBody

BOUNDARY = "aplserve-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def local_storage(dest: Path) -> Storage:
    """file:// storage whose uploads/ directory is `dest`."""
    assert dest.name == "uploads"
    return Storage(DataFiles(dest.parent))


def make_app(dest: Path | Storage, max_bytes: int, kept: list[UploadBody] | None = None) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    storage = dest if isinstance(dest, Storage) else local_storage(dest)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        received = await receive_upload(request, storage, max_bytes)
        if kept is not None:
            kept.append(received.body)
        local = received.body.path if isinstance(received.body, LocalUpload) else None
        return {
            "filename": received.filename,
            "fields": received.fields,
            "size_bytes": received.size_bytes,
            "sha256": received.sha256,
            "stored_as": local.name if local else None,
            "in_dest": local is not None and local.parent == dest,
        }

    return app


def post(app: FastAPI, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/upload", **kwargs)

    return asyncio.run(go())


def part_head(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def closing() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def streamed_file_body(size: int, chunk: int = 64 * 1024, filename: str = "big.csv") -> AsyncIterator[bytes]:
    """A multipart body whose file part is `size` zero bytes, produced chunk by chunk (no Content-Length)."""

    async def gen() -> AsyncIterator[bytes]:
        yield part_head("name", None) + b"streamed\r\n" + part_head("file", filename)
        left = size
        while left:
            n = min(chunk, left)
            yield bytes(n)
            left -= n
        yield closing()

    return gen()


def files_in(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_upload_is_stored_hashed_with_fields(tmp_path: Path) -> None:
    dest = tmp_path / "uploads"
    content = b"text,labels\n" + b"hello,a|b\n" * 1000
    response = post(
        make_app(dest, 1 << 20),
        files={"file": ("data.csv", content, "text/csv")},
        data={"name": "My dataset"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == "data.csv"
    assert body["fields"] == {"name": "My dataset"}
    assert body["size_bytes"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["in_dest"] is True
    assert (dest / body["stored_as"]).read_bytes() == content
    assert files_in(dest) == [body["stored_as"]]


def test_client_paths_in_filename_are_reduced_to_a_base_name(tmp_path: Path) -> None:
    body = part_head("file", "../../etc/evil.csv") + b"text,labels\n" + closing()
    response = post(make_app(tmp_path / "uploads", 1024), content=body, headers={"content-type": MULTIPART})
    assert response.json()["filename"] == "evil.csv"
    assert sanitize_filename("C:\\Users\\me\\data.JSONL") == "data.JSONL"
    assert sanitize_filename("..") == "upload"
    assert sanitize_filename("a\x00b\x1f.csv") == "ab.csv"
    long_name = sanitize_filename("x" * 400 + ".zip")
    assert len(long_name) == 255 and long_name.endswith(".zip")


@pytest.mark.parametrize(
    ("name", "body", "content_type", "status", "code"),
    [
        ("no file part", part_head("name") + b"just a name" + closing(), MULTIPART, 422, "missing_file"),
        ("json body", b'{"file": "x"}', "application/json", 415, "unsupported_media_type"),
        (
            "no boundary",
            part_head("file", "a.csv") + b"x" + closing(),
            "multipart/form-data",
            400,
            "invalid_multipart",
        ),
        (
            "truncated body",
            part_head("file", "a.csv") + b"text,labels\nx,a\n",
            MULTIPART,
            400,
            "invalid_multipart",
        ),
        ("garbage body", b"this is not multipart at all", MULTIPART, 400, "invalid_multipart"),
        (
            "two files",
            part_head("file", "a.csv") + b"x" + b"\r\n" + part_head("file", "b.csv") + b"y" + closing(),
            MULTIPART,
            400,
            "too_many_files",
        ),
        (
            "file under another field",
            part_head("file", "a.csv") + b"x" + b"\r\n" + part_head("other", "b.csv") + b"y" + closing(),
            MULTIPART,
            400,
            "unexpected_file",
        ),
        (
            "huge text field",
            part_head("file", "a.csv")
            + b"x\r\n"
            + part_head("name")
            + b"n" * (MAX_FIELD_BYTES + 1)
            + closing(),
            MULTIPART,
            400,
            "field_too_large",
        ),
        (
            "field not utf-8",
            part_head("file", "a.csv") + b"x\r\n" + part_head("name") + b"\xff\xfe" + closing(),
            MULTIPART,
            400,
            "invalid_field",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_bad_forms_are_refused_without_leftovers(
    tmp_path: Path, name: str, body: bytes, content_type: str, status: int, code: str
) -> None:
    dest = tmp_path / "uploads"
    response = post(make_app(dest, 1 << 20), content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert files_in(dest) == []


def test_content_length_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    dest = tmp_path / "uploads"
    big = part_head("file", "a.csv") + bytes(300_000) + closing()
    response = post(make_app(dest, 1000), content=big, headers={"content-type": MULTIPART})
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert not dest.exists()  # refused on the header alone: nothing was created


def test_streamed_upload_over_the_limit_stops_and_removes_the_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "uploads"
    limit = 1 << 20
    response = post(
        make_app(dest, limit), content=streamed_file_body(limit + 1), headers={"content-type": MULTIPART}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert "1 MiB" in response.json()["detail"]
    assert files_in(dest) == []


def test_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    dest = tmp_path / "uploads"
    limit = 256 * 1024
    response = post(
        make_app(dest, limit), content=streamed_file_body(limit), headers={"content-type": MULTIPART}
    )
    assert response.status_code == 200, response.text
    assert response.json()["size_bytes"] == limit
    assert response.json()["sha256"] == hashlib.sha256(bytes(limit)).hexdigest()


def test_memory_stays_flat_while_a_large_body_streams_to_disk(tmp_path: Path) -> None:
    """32 MiB goes through the route while Python's allocation peak stays under 2 MiB."""
    dest = tmp_path / "uploads"
    size = 32 * 1024 * 1024
    app = make_app(dest, 64 * 1024 * 1024)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = post(app, content=streamed_file_body(size), headers={"content-type": MULTIPART})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert response.json()["size_bytes"] == size
    assert (dest / response.json()["stored_as"]).stat().st_size == size
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a {size} byte upload"


def test_client_disconnect_mid_upload_removes_the_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "uploads"
    messages = [
        {"type": "http.request", "body": part_head("file", "a.csv") + bytes(100_000), "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [(b"content-type", MULTIPART.encode())],
    }
    request = Request(scope, receive)
    storage = local_storage(dest)
    call: Callable[[], Awaitable[Any]] = lambda: receive_upload(request, storage, 1 << 20)  # noqa: E731
    with pytest.raises(ClientDisconnect):
        asyncio.run(call())
    assert dest.exists() and files_in(dest) == []
