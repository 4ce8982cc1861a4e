"""The s3:// backend of core.objects: boto3 with its managed (multipart) transfers.

Why boto3: it is the reference S3 client (SigV4 signing, the standard AWS_* variables and
credential chain, retries with backoff, connect/read timeouts), and `upload_file` /
`download_file` stream from and to disk with multipart transfers of bounded chunks, so no
process holds an archive in memory. A single PUT and a completed multipart upload are both
visible only once whole, so an object is never seen half written; an interrupted multipart
upload is invisible and `sweep` aborts it.

Every object carries its SHA-256 in its metadata (`x-amz-meta-sha256`); a download is
verified against it before it enters the node-local cache.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import logging
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from core.cache import Missing, NodeCache
from core.files import DataFiles
from core.objects import SAMPLES_FILE, Storage, StorageConfig, StorageUnavailable, backoff

log = logging.getLogger(__name__)

DATASET_ARCHIVE = ".tar"
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
#: What servers answer for a full bucket or quota when they say so (Ceph RGW, MinIO, HTTP 507).
#: SeaweedFS does not: a bucket over its quota answers 500 InternalError, read as unavailable.
_FULL = {
    "QuotaExceeded",
    "InsufficientStorage",
    "StorageFull",
    "XMinioStorageFull",
    "XMinioAdminBucketQuotaExceeded",
    "EntityTooLarge",
}
MB = 1024 * 1024


def _client_error_code(error: BaseException) -> tuple[str, int] | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn boto3's failures into the service's: missing -> Missing, a full bucket or quota ->
    OSError(ENOSPC) (so it reads as `storage_full` everywhere), anything else from the client or
    the server (connection refused, timeouts, 5xx) -> StorageUnavailable."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        for link in _chain(error):
            found = _client_error_code(link)
            if found is None:
                continue
            code, status = found
            if code in _MISSING or status == 404:
                raise Missing(what) from error
            if code in _FULL or status == 507:
                raise OSError(errno.ENOSPC, f"object storage is full ({code}) while {what}") from error
        log.warning("object storage failed while %s: %s", what, error)
        raise StorageUnavailable(f"the object storage did not answer while {what}") from error


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


class S3Storage(Storage):
    remote = True

    def __init__(self, config: StorageConfig, client: Any, bucket: str, prefix: str) -> None:
        super().__init__(DataFiles(config.data_dir / "scratch"))
        self.local = DataFiles(config.data_dir / "cache")
        self.cache = NodeCache(self.local.root, config.cache_max_bytes)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.checkpoint_tries = config.checkpoint_tries
        from boto3.s3.transfer import TransferConfig

        self.transfer = TransferConfig(
            multipart_threshold=64 * MB, multipart_chunksize=16 * MB, max_concurrency=4, use_threads=True
        )

    @classmethod
    def from_config(cls, config: StorageConfig) -> S3Storage:
        parsed = urlparse(config.url or "")
        client = _client(config.endpoint_url, config.timeout_s, config.max_attempts)
        return cls(config, client, parsed.netloc, parsed.path)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    # --- generic files ---

    def _upload(self, path: Path, relative: str) -> None:
        extra = {"Metadata": {"sha256": file_sha256(path)}}
        with translated(f"storing {relative}"):
            self.client.upload_file(
                str(path), self.bucket, self.key(relative), ExtraArgs=extra, Config=self.transfer
            )

    def publish(self, path: Path, *, keep: bool = False) -> None:
        self._upload(path, self.relative(path))
        if not keep:
            path.unlink(missing_ok=True)

    def publish_fetched(self, path: Path) -> Path:
        relative = self.relative(path)
        self._upload(path, relative)
        try:
            found = self.cache.get(relative, lambda temporary: os.replace(path, temporary))
        finally:
            path.unlink(missing_ok=True)
        assert found is not None
        return found

    def receive(self) -> S3Upload:
        return S3Upload(self)

    def _download(self, relative: str, target: Path) -> None:
        """Download to `target` and verify it against the object's recorded SHA-256."""
        with translated(f"reading {relative}"):
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
            self.client.download_file(self.bucket, self.key(relative), str(target), Config=self.transfer)
        expected = head.get("Metadata", {}).get("sha256")
        if expected and file_sha256(target) != expected:
            target.unlink(missing_ok=True)
            raise StorageUnavailable(f"the stored {relative} failed its checksum")

    def fetch(self, relative: str) -> Path | None:
        return self.cache.get(relative, lambda temporary: self._download(relative, temporary))

    def exists(self, relative: str) -> bool:
        try:
            with translated(f"looking up {relative}"):
                self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        except Missing:
            return False
        return True

    def remove(self, *relatives: str) -> None:
        for relative in relatives:
            self.cache.discard(relative)
        objects = [{"Key": self.key(relative)} for relative in relatives]
        if objects:
            with translated("deleting objects"):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

    def _keys(self, relative_prefix: str) -> list[str]:
        keys: list[str] = []
        with translated(f"listing {relative_prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(relative_prefix)
            )
            for page in pages:
                keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    # --- datasets: one tar object per dataset ---

    @staticmethod
    def dataset_object(dataset_id: str) -> str:
        return f"datasets/{dataset_id}{DATASET_ARCHIVE}"

    def publish_dataset(self, dataset_id: str) -> None:
        """Tar the ingested directory into a scratch file (streamed to disk, never to memory),
        upload it (multipart when large), then drop the scratch copies."""
        source = self.scratch.dataset(dataset_id)
        archive = self.scratch.datasets / f".{dataset_id}{DATASET_ARCHIVE}.partial-upload"
        try:
            with tarfile.open(archive, "w") as tar:
                tar.add(source, arcname=".")
            self._upload(archive, self.dataset_object(dataset_id))
        finally:
            archive.unlink(missing_ok=True)
            shutil.rmtree(source, ignore_errors=True)

    def _fill_dataset(self, dataset_id: str, temporary: Path) -> None:
        archive = temporary.with_name(temporary.name + DATASET_ARCHIVE)
        try:
            self._download(self.dataset_object(dataset_id), archive)
            with tarfile.open(archive) as tar:
                tar.extractall(temporary, filter="data")
        finally:
            archive.unlink(missing_ok=True)

    def dataset_dir(self, dataset_id: str) -> Path | None:
        path = self.cache.get(
            f"datasets/{dataset_id}", lambda temporary: self._fill_dataset(dataset_id, temporary)
        )
        return path if path is not None and (path / SAMPLES_FILE).is_file() else None

    def delete_dataset(self, dataset_id: str) -> None:
        shutil.rmtree(self.scratch.dataset(dataset_id), ignore_errors=True)
        self.cache.discard(f"datasets/{dataset_id}")
        self.remove(self.dataset_object(dataset_id))

    # --- checkpoints ---

    def _checkpoint_object(self, job_id: str) -> str:
        return self.relative(self.scratch.checkpoint(job_id))

    def save_checkpoint(self, job_id: str) -> None:
        """Upload the epoch checkpoint, retrying with backoff; StorageUnavailable after the last try."""
        path = self.scratch.checkpoint(job_id)
        for attempt in range(self.checkpoint_tries):
            try:
                self._upload(path, self._checkpoint_object(job_id))
                return
            except StorageUnavailable:
                if attempt + 1 == self.checkpoint_tries:
                    raise
                log.warning("job %s: storing the checkpoint failed; retrying", job_id)
                backoff(attempt)

    def fetch_checkpoint(self, job_id: str) -> Path | None:
        """Download the job's last stored checkpoint over any local one (another host may have
        trained further); None, and no local file, when storage has none."""
        path = self.scratch.checkpoint(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per caller: the ranks of a multi-device job on one host fetch it at once.
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            self._download(self._checkpoint_object(job_id), partial)
        except Missing:
            path.unlink(missing_ok=True)
            return None
        partial.replace(path)
        return path

    def has_checkpoint(self, job_id: str) -> bool:
        try:
            return self.exists(self._checkpoint_object(job_id))
        except StorageUnavailable:
            return False

    def discard_checkpoint(self, job_id: str) -> None:
        super().discard_checkpoint(job_id)
        try:
            self.remove(self._checkpoint_object(job_id))
        except StorageUnavailable:
            log.warning("job %s: could not delete its stored checkpoint; the sweep leaves it", job_id)

    # --- whole owners ---

    def delete_model(self, model_id: str, artifact_path: str) -> None:
        archive = self.local.stored_artifact(artifact_path)
        names = [self.relative(self.local.label_issues(model_id))]
        if archive is not None:
            names += [self.relative(archive), self.relative(DataFiles.onnx_export(archive, model_id))]
        self.remove(*names)

    # --- operations ---

    def check(self) -> None:
        with translated("checking the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def sweep(self, grace_seconds: float) -> int:
        """Remove what killed processes left under the prefix more than `grace_seconds` ago:
        incomplete multipart uploads (invisible, but they hold space) and received uploads
        never ingested. How many."""
        now = datetime.now(UTC).timestamp()
        return self._abort_incomplete(now, grace_seconds) + self._sweep_uploads(now, grace_seconds)

    def _abort_incomplete(self, now: float, grace_seconds: float) -> int:
        aborted = 0
        with translated("listing incomplete uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.key("")
            )
            uploads = [upload for page in pages for upload in page.get("Uploads", [])]
        for upload in uploads:
            if now - upload["Initiated"].timestamp() < grace_seconds:
                continue
            try:
                with translated("aborting an incomplete upload"):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
            except Missing:
                continue
            log.warning("aborted the incomplete upload of %s (begun %s)", upload["Key"], upload["Initiated"])
            aborted += 1
        return aborted

    def partials(self) -> list[Path]:
        return self.cache.partials()

    def _sweep_uploads(self, now: float, grace_seconds: float) -> int:
        """Delete received uploads a killed API never ingested (complete objects under uploads/)."""
        stale: list[str] = []
        with translated("listing received uploads"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key("uploads/")
            )
            for page in pages:
                stale += [
                    item["Key"]
                    for item in page.get("Contents", [])
                    if now - item["LastModified"].timestamp() >= grace_seconds
                ]
        if stale:
            with translated("deleting stale uploads"):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in stale], "Quiet": True}
                )
            log.warning("deleted %d stale received upload(s): %s", len(stale), stale)
        return len(stale)


#: Size of the parts a received upload is sent in (S3 wants at least 5 MiB but for the last).
UPLOAD_PART_BYTES = 8 * MB
#: Read-ahead of the ingest reading a received upload back (one ranged GET per refill).
READ_AHEAD_BYTES = 8 * MB


class S3Upload:
    """An upload streamed into the bucket as it arrives, under a temporary key `uploads/<hex>.part`.

    Parts of `UPLOAD_PART_BYTES` go up as soon as they are complete (a multipart upload, begun
    with the first full part; a small upload is one PUT at the end), so the API holds at most one
    part of it in memory and none of it on disk. Until `finish` completes it, nothing is visible
    under the key; the stale-partials sweep aborts what a killed process left incomplete and
    deletes what it left complete but never ingested.
    """

    def __init__(self, storage: S3Storage) -> None:
        self.storage = storage
        self.relative = f"uploads/upload-{uuid.uuid4().hex}.part"
        self.key = storage.key(self.relative)
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._complete = False
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self.size += len(data)

    def ready(self) -> bool:
        return len(self._buffer) >= UPLOAD_PART_BYTES

    def flush(self) -> None:
        """Send the buffered part (a little over UPLOAD_PART_BYTES: parts need not be equal)."""
        if len(self._buffer) >= UPLOAD_PART_BYTES:
            body, self._buffer = bytes(self._buffer), bytearray()
            self._send(body)

    def _send(self, body: bytes) -> None:
        client, bucket = self.storage.client, self.storage.bucket
        with translated("receiving an upload"):
            if self._upload_id is None:
                self._upload_id = client.create_multipart_upload(Bucket=bucket, Key=self.key)["UploadId"]
            number = len(self._parts) + 1
            answer = client.upload_part(
                Bucket=bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
            )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def finish(self) -> None:
        """Send what is left and make the object whole (visible only from now on)."""
        client, bucket = self.storage.client, self.storage.bucket
        if self._upload_id is None:
            with translated("receiving an upload"):
                client.put_object(Bucket=bucket, Key=self.key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._send(bytes(self._buffer))
            with translated("receiving an upload"):
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        self._buffer = bytearray()
        self._complete = True

    def open(self) -> IO[bytes]:
        """The received upload, read back with ranged GETs behind a bounded read-ahead buffer."""
        return io.BufferedReader(_RangedObject(self.storage, self.key, self.size), READ_AHEAD_BYTES)

    def discard(self) -> None:
        """Abort or delete it; a storage that does not answer leaves it to the sweep (logged)."""
        self._buffer = bytearray()
        client, bucket = self.storage.client, self.storage.bucket
        try:
            with translated("discarding an upload"):
                if self._complete:
                    client.delete_object(Bucket=bucket, Key=self.key)
                elif self._upload_id is not None:
                    client.abort_multipart_upload(Bucket=bucket, Key=self.key, UploadId=self._upload_id)
        except (StorageUnavailable, Missing, OSError):
            log.warning("could not discard the received upload %s; the sweep removes it", self.key)


class _RangedObject(io.RawIOBase):
    """A stored object as a seekable binary file: each read is one ranged GET."""

    def __init__(self, storage: S3Storage, key: str, size: int) -> None:
        self.storage = storage
        self.key = key
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        with translated("reading a received upload"):
            answer = self.storage.client.get_object(
                Bucket=self.storage.bucket, Key=self.key, Range=f"bytes={self.position}-{end - 1}"
            )
            data = answer["Body"].read()
        view = memoryview(buffer).cast("B")
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, timeout_s: float, max_attempts: int) -> Any:
    """One boto3 client per endpoint and limits, shared by every Storage and thread of the process
    (botocore clients are thread-safe; making one costs tens of milliseconds)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            # Plain Content-Length uploads (no chunked trailing checksums): every S3-compatible
            # server takes them (SeaweedFS, MinIO, Ceph), unlike aws-chunked bodies.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
