"""The storage interface (core.objects) against a real S3 server (SeaweedFS `weed mini`), and the
node-local cache (core.cache): two data dirs play two hosts that share only the bucket."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from core.cache import Missing, NodeCache
from core.objects import Storage, StorageUnavailable, storage_for
from core.s3 import S3Storage
from core.settings import Settings
from tests.s3server import AWS_ENV, BUCKET, WeedServer, start_weed


def _settings(data_dir: Path, env: dict[str, str], **extra: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        storage_url=env["APLSERVE_STORAGE_URL"],
        s3_endpoint_url=env["APLSERVE_S3_ENDPOINT_URL"],
        **extra,  # type: ignore[arg-type]
    )


def _hosts(tmp_path: Path, env: dict[str, str], **extra: object) -> tuple[S3Storage, S3Storage]:
    a = storage_for(_settings(tmp_path / "a", env, **extra))
    b = storage_for(_settings(tmp_path / "b", env, **extra))
    assert isinstance(a, S3Storage) and isinstance(b, S3Storage)
    return a, b


def _keys(storage: S3Storage) -> list[str]:
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=storage.key(""))
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_file_storage_is_the_data_dir_itself(tmp_path: Path) -> None:
    storage = storage_for(Settings(data_dir=tmp_path))
    assert type(storage) is Storage and storage.scratch.root == tmp_path
    archive = storage.scratch.artifact("m1")
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"model")
    storage.publish(archive)  # nothing moves
    assert archive.read_bytes() == b"model" and storage.fetch("artifacts/m1.tar") == archive
    storage.delete_model("m1", "artifacts/m1.tar")
    assert not archive.exists() and storage.fetch("artifacts/m1.tar") is None


def test_a_file_published_on_one_host_is_read_on_another_and_cached(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    a, b = _hosts(tmp_path, s3_env)
    archive = a.scratch.artifact("model42")
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x" * 100_000)
    a.publish(archive)
    assert not archive.exists()  # the scratch copy goes once stored
    assert [key.split("/", 1)[1] for key in _keys(a)] == ["artifacts/model42.tar"]
    local = b.fetch("artifacts/model42.tar")
    assert local is not None and local.read_bytes() == b"x" * 100_000
    assert local.is_relative_to(tmp_path / "b" / "cache")
    # A cache hit asks nothing of the storage: it still answers once the object is gone.
    a.client.delete_object(Bucket=BUCKET, Key=a.key("artifacts/model42.tar"))
    assert b.fetch("artifacts/model42.tar") == local
    assert a.fetch("artifacts/model42.tar") is None  # host a never cached it


def test_a_dataset_travels_as_one_object_and_is_deleted_with_its_id(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    a, b = _hosts(tmp_path, s3_env)
    directory = a.scratch.dataset("ds7")
    (directory / "images").mkdir(parents=True)
    (directory / "samples.jsonl").write_text('{"text": "hi", "labels": []}\n')
    (directory / "images" / "0.png").write_bytes(b"png")
    a.publish_dataset("ds7")
    assert not directory.exists()
    assert [key.split("/", 1)[1] for key in _keys(a)] == ["datasets/ds7.tar"]
    local = b.dataset_dir("ds7")
    assert local is not None and (local / "images" / "0.png").read_bytes() == b"png"
    b.delete_dataset("ds7")
    assert _keys(a) == [] and not local.exists()
    assert a.dataset_dir("ds7") is None


def test_a_download_that_fails_its_checksum_is_never_cached(tmp_path: Path, s3_env: dict[str, str]) -> None:
    a, b = _hosts(tmp_path, s3_env)
    label_issues = a.scratch.label_issues("m9")
    label_issues.parent.mkdir(parents=True)
    label_issues.write_text("{}")
    a.publish(label_issues)
    key = a.key("label-issues/m9.json")
    recorded = a.client.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    a.client.put_object(Bucket=BUCKET, Key=key, Body=b'{"tampered": 1}', Metadata=recorded)
    with pytest.raises(StorageUnavailable, match="checksum"):
        b.fetch_label_issues("m9")
    assert not (tmp_path / "b" / "cache" / "label-issues" / "m9.json").exists()
    assert b.cache.partials() == []


def test_a_checkpoint_resumes_on_another_host_and_is_discarded_everywhere(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    a, b = _hosts(tmp_path, s3_env)
    ckpt = a.scratch.checkpoint("job1")
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"epoch 1")
    a.save_checkpoint("job1")
    assert ckpt.is_file() and a.has_checkpoint("job1")  # training keeps writing its local copy
    resumed = b.fetch_checkpoint("job1")
    assert resumed == b.scratch.checkpoint("job1") and resumed.read_bytes() == b"epoch 1"
    b.discard_checkpoint("job1")
    assert not a.has_checkpoint("job1") and a.fetch_checkpoint("job1") is None and not ckpt.exists()


def test_the_sweep_aborts_abandoned_multipart_uploads_only(tmp_path: Path, s3_env: dict[str, str]) -> None:
    a, _ = _hosts(tmp_path, s3_env)
    a.client.create_multipart_upload(Bucket=BUCKET, Key=a.key("artifacts/killed.tar"))
    assert a.sweep(grace_seconds=3600) == 0  # too young: may belong to an upload in progress
    assert a.sweep(grace_seconds=0) == 1
    uploads = a.client.list_multipart_uploads(Bucket=BUCKET, Prefix=a.key("")).get("Uploads", [])
    assert uploads == [] and _keys(a) == []


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(tmp_path: Path, s3_env: dict[str, str]) -> None:
    a, b = _hosts(tmp_path, s3_env)
    archive = a.scratch.artifact("big")
    archive.parent.mkdir(parents=True)
    with archive.open("wb") as handle:  # past the 64 MiB multipart threshold, never in memory whole
        for i in range(70):
            handle.write(bytes([i]) * (1024 * 1024))
    a.publish(archive)
    etag = a.client.head_object(Bucket=BUCKET, Key=a.key("artifacts/big.tar"))["ETag"]
    assert "-" in etag  # a multipart upload's ETag ends in -<parts>
    local = b.fetch("artifacts/big.tar")
    assert local is not None and local.stat().st_size == 70 * 1024 * 1024


def test_an_unreachable_storage_fails_fast_and_checkpoints_retry_then_fail(tmp_path: Path) -> None:
    from tests.s3server import _free_port

    env = {
        "APLSERVE_STORAGE_URL": "s3://aplserve/x",
        "APLSERVE_S3_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        storage = storage_for(
            _settings(
                tmp_path, env, storage_timeout_seconds=1, storage_max_attempts=1, checkpoint_upload_tries=3
            )
        )
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            storage.check()
        ckpt = storage.scratch.checkpoint("j")
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"c")
        with pytest.raises(StorageUnavailable):
            storage.save_checkpoint("j")  # three tries, 0.5 s and 1 s apart
        assert 1.4 < time.monotonic() - started < 20


# --- the node-local cache ---


def _fill_with(data: bytes, counter: Path | None = None, delay: float = 0.0):  # type: ignore[no-untyped-def]
    def fill(temporary: Path) -> None:
        if counter is not None:
            with counter.open("a") as handle:
                handle.write("x")
        time.sleep(delay)
        temporary.write_bytes(data)

    return fill


def test_the_cache_evicts_the_least_recently_used_entry(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path, max_bytes=250)
    first = cache.get("artifacts/1.tar", _fill_with(b"1" * 100))
    second = cache.get("artifacts/2.tar", _fill_with(b"2" * 100))
    time.sleep(0.05)
    assert cache.get("artifacts/1.tar", _fill_with(b"never")) == first  # a hit: 1 is now the newest
    cache.get("artifacts/3.tar", _fill_with(b"3" * 100))
    assert first is not None and first.exists() and second is not None and not second.exists()
    assert cache.size_bytes() == 200
    # One entry larger than the whole cache is kept (it is in use), the others go.
    assert cache.get("datasets/huge", _fill_with(b"h" * 1000)) is not None
    assert [path.name for path, _, _ in cache.entries()] == ["huge"]


def test_a_missing_object_caches_nothing(tmp_path: Path) -> None:
    def fill(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise Missing("gone")

    cache = NodeCache(tmp_path, max_bytes=100)
    assert cache.get("artifacts/gone.tar", fill) is None
    assert cache.entries() == [] and cache.partials() == []


def _fill_in_process(root: str, counter: str) -> str:
    cache = NodeCache(Path(root), max_bytes=10_000)
    path = cache.get("datasets/shared", _fill_with(b"d" * 10, Path(counter), delay=0.5))
    return path.read_text() if path is not None else ""


def test_two_processes_filling_one_entry_download_it_once(tmp_path: Path) -> None:
    counter = tmp_path / "fills"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_fill_in_process, [(str(tmp_path / "cache"), str(counter))] * 2)
    assert results == ["d" * 10, "d" * 10]
    assert counter.read_text() == "x"


@pytest.fixture
def private_s3(tmp_path: Path) -> WeedServer:
    server = start_weed(tmp_path / "weed")
    yield server  # type: ignore[misc]
    server.stop()


def test_a_stopped_server_reads_as_unavailable_and_a_restarted_one_as_back(
    tmp_path: Path, private_s3: WeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    storage = storage_for(_settings(tmp_path / "d", private_s3.storage_env(), storage_timeout_seconds=2))
    storage.check()
    private_s3.stop()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        storage.check()
    assert time.monotonic() - started < 15
    private_s3.start()
    storage.check()


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("QuotaExceeded", 403),
        ("InsufficientStorage", 507),
        ("XMinioAdminBucketQuotaExceeded", 400),
        ("EntityTooLarge", 400),
    ],
)
def test_a_full_bucket_reads_as_a_full_disk(code: str, status: int) -> None:
    """What S3 servers that name the condition answer for a full bucket or quota becomes ENOSPC:
    507 `storage_full` in the API, `storage_full` for a job (core.storage.is_storage_full). Not
    reproducible on `weed mini`: a SeaweedFS bucket over its quota answers 500 InternalError
    (tests/api/test_upload_object_storage.py meets that on the real server)."""
    from botocore.exceptions import ClientError

    from core.s3 import translated
    from core.storage import is_storage_full

    answer = {"Error": {"Code": code, "Message": "full"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    with pytest.raises(OSError) as raised, translated("storing a file"):
        raise ClientError(answer, "PutObject")  # type: ignore[arg-type]
    assert is_storage_full(raised.value)


def test_a_server_error_reads_as_unavailable_and_a_missing_key_as_missing() -> None:
    from botocore.exceptions import ClientError

    from core.s3 import translated

    with pytest.raises(StorageUnavailable), translated("reading"):
        raise ClientError(
            {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"
        )  # type: ignore[arg-type]
    with pytest.raises(Missing), translated("reading"):
        raise ClientError(
            {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject"
        )  # type: ignore[arg-type]


def test_a_server_that_never_answers_fails_within_the_timeout(tmp_path: Path) -> None:
    """A hung S3 server (it accepts connections and says nothing) costs at most the configured
    timeout per try, then reads as unavailable: 503 storage_unavailable, never a hang."""
    import socket

    with socket.socket() as hung, pytest.MonkeyPatch.context() as patch:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections complete in the backlog; nobody ever reads or answers
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        env = {
            "APLSERVE_STORAGE_URL": "s3://aplserve/hung",
            "APLSERVE_S3_ENDPOINT_URL": f"http://127.0.0.1:{hung.getsockname()[1]}",
        }
        storage = storage_for(_settings(tmp_path, env, storage_timeout_seconds=1, storage_max_attempts=2))
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            storage.fetch("artifacts/m.tar")
        assert 1.0 <= time.monotonic() - started < 10
