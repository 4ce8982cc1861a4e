"""The one storage interface: where the files of core.files' layout are kept, and how a process
gets a local copy of one.

Two backends behind `Storage` (chosen by `APLSERVE_STORAGE_URL`):

* `file://` (the default, the data dir): the layout *is* the storage. Publishing a file is a
  no-op (the writer already wrote it in place, atomically, apl.atomic), a local copy is the
  file itself. Embedded mode behaves exactly as before this module existed.
* `s3://BUCKET/PREFIX` (`S3Storage`): the objects live in an S3-compatible bucket under
  `PREFIX/<the layout's relative path>`, so every object of a dataset or model has its id in
  its key. A process writes into a node-local scratch tree (`<data_dir>/scratch`, the same
  layout), then publishes the file (boto3's managed transfer: one PUT, or a multipart upload
  for large files; either is visible only once complete). Readers materialise objects into a
  bounded node-local cache (`<data_dir>/cache`, core.cache). The data dir holds nothing
  another host needs.

Callers never build a path under the data dir themselves: they ask this interface for
where to write (`scratch`), to publish, to fetch, and to delete. `apl` stays pure: it only
ever sees the local paths this hands out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from core.files import DataFiles
from core.storage import Removed, remove_stale

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

#: The file in a stored dataset directory every reader needs (apl.formats.SAMPLES_FILE).
SAMPLES_FILE = "samples.jsonl"


class StorageUnavailable(Exception):
    """The object storage did not answer (down, unreachable, too slow): the API answers 503
    `storage_unavailable` (api.problems), a job fails with that code (worker.runner)."""


class UploadBody(Protocol):
    """An upload being received into storage as it arrives, then read back by the ingest.

    The receiving loop `write`s each chunk (never blocks on the network: at most one part is
    buffered) and, whenever `ready()`, runs `flush()` in a thread (the blocking network send);
    at the end of the body `finish()` makes it whole. The ingest `open()`s it (binary, seekable:
    a ZIP's central directory is at its end), and whoever received it `discard()`s it after.
    """

    def write(self, data: bytes | memoryview) -> None: ...

    def ready(self) -> bool: ...

    def flush(self) -> None: ...

    def finish(self) -> None: ...

    def open(self) -> IO[bytes]: ...

    def discard(self) -> None: ...


class LocalUpload:
    """file:// storage: the upload streams into `<data_dir>/uploads/upload-*.part` as it arrives."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)
        self.path = Path(path)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)

    def ready(self) -> bool:
        return False  # every write already went to the file

    def flush(self) -> None:
        """Nothing waits for a network here."""

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def open(self) -> IO[bytes]:
        return self.path.open("rb")

    def discard(self) -> None:
        """Close and delete the file; closing may fail again (a full disk) but still frees it."""
        try:
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StorageConfig:
    """What picks and configures the backend (from Settings; hashable, so one client per config)."""

    data_dir: Path
    url: str | None
    endpoint_url: str | None
    timeout_s: float
    max_attempts: int
    cache_max_bytes: int
    checkpoint_tries: int

    @classmethod
    def of(cls, settings: Settings) -> StorageConfig:
        return cls(
            data_dir=settings.data_dir,
            url=settings.storage_url,
            endpoint_url=settings.s3_endpoint_url,
            timeout_s=settings.storage_timeout_seconds,
            max_attempts=settings.storage_max_attempts,
            cache_max_bytes=settings.cache_max_bytes,
            checkpoint_tries=settings.checkpoint_upload_tries,
        )


class Storage:
    """The file:// backend: files live where core.files lays them out; nothing moves."""

    remote = False

    def __init__(self, files: DataFiles) -> None:
        #: Where a process writes new files (and, here, where they stay).
        self.scratch = files
        #: Where local copies of stored files are (here the same tree).
        self.local = files

    # --- generic files of the layout, named by their path relative to the layout's root ---

    def relative(self, path: Path) -> str:
        """The layout path of a scratch or cache file ("artifacts/<id>.tar")."""
        for tree in (self.scratch, self.local):
            if path.is_relative_to(tree.root):
                return path.relative_to(tree.root).as_posix()
        raise ValueError(f"{path} is not in the storage layout")

    def publish(self, path: Path, *, keep: bool = False) -> None:
        """Make a completely written scratch file visible to every host (here: already is)."""

    def publish_fetched(self, path: Path) -> Path:
        """Publish a scratch file and hand back its local copy (s3: moved into the cache, so the
        host that made it does not download it again); here the file itself."""
        return path

    def receive(self) -> UploadBody:
        """Where a new upload streams as it arrives (here: a file under uploads/)."""
        return LocalUpload(self.scratch.uploads)

    def fetch(self, relative: str) -> Path | None:
        """A local copy of a stored file, or None when there is no such file."""
        path = self.local.root / relative
        return path if path.is_file() else None

    def exists(self, relative: str) -> bool:
        return (self.local.root / relative).is_file()

    def remove(self, *relatives: str) -> None:
        """Delete stored files (missing ones are fine); failures are logged, never raised."""
        for relative in relatives:
            _unlink(self.local.root / relative)

    def fetch_label_issues(self, model_id: str) -> Path | None:
        return self.fetch(self.relative(self.local.label_issues(model_id)))

    def fetch_predictions(self, job_id: str, split: str, attempt: int) -> Path | None:
        return self.fetch(self.relative(self.local.predictions(job_id, split, attempt)))

    # --- datasets: a directory (apl.formats layout) ---

    def publish_dataset(self, dataset_id: str) -> None:
        """The dataset ingested into `scratch.dataset(id)` is complete: make it visible."""

    def dataset_dir(self, dataset_id: str) -> Path | None:
        """A local directory holding the stored dataset, or None when it is gone."""
        path = self.local.dataset(dataset_id)
        return path if (path / SAMPLES_FILE).is_file() else None

    def delete_dataset(self, dataset_id: str) -> None:
        _rmtree(self.local.dataset(dataset_id))

    # --- checkpoints: written in place every epoch, published after each save ---

    def save_checkpoint(self, job_id: str) -> None:
        """The checkpoint at `scratch.checkpoint(job_id)` was just written: keep it for any host."""

    def fetch_checkpoint(self, job_id: str) -> Path | None:
        """The job's last checkpoint as a local file at `scratch.checkpoint(job_id)`, or None."""
        path = self.scratch.checkpoint(job_id)
        return path if path.is_file() else None

    def has_checkpoint(self, job_id: str) -> bool:
        return self.scratch.checkpoint(job_id).is_file()

    def discard_checkpoint(self, job_id: str) -> None:
        shutil.rmtree(self.scratch.checkpoint(job_id).parent, ignore_errors=True)

    # --- whole owners ---

    def delete_model(self, model_id: str, artifact_path: str) -> None:
        """Remove the archive, its ONNX export and the label-issue ranking of a model."""
        archive = self.local.stored_artifact(artifact_path)
        paths = [archive, DataFiles.onnx_export(archive, model_id)] if archive is not None else []
        for path in [*paths, self.local.label_issues(model_id)]:
            _unlink(path)

    # --- operations ---

    def check(self) -> None:
        """Raise when the storage does not answer (readiness)."""

    def sweep(self, grace_seconds: float) -> int:
        """Remove abandoned partial objects older than the grace period; how many (local: none here)."""
        return 0

    def partials(self) -> list[Path]:
        """Local partial files of the cache (interrupted downloads), for the start-up sweep."""
        return []


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # logged, never shown: the owner is gone either way
        log.warning("could not remove %s: %s", path, exc)


def _rmtree(directory: Path) -> None:
    def _log(
        _function: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]
    ) -> None:
        log.warning("could not remove %s: %s", path, exc_info[1])

    if directory.exists():
        shutil.rmtree(directory, onerror=_log)


_built: dict[StorageConfig, Storage] = {}
_built_lock = threading.Lock()


def storage_for(settings: Settings) -> Storage:
    """The storage of these settings; one instance (one S3 client, one cache) per configuration."""
    config = StorageConfig.of(settings)
    with _built_lock:
        found = _built.get(config)
        if found is None:
            found = _built[config] = _build(config)
        return found


def _build(config: StorageConfig) -> Storage:
    url = config.url or ""
    if not url or url.startswith("file://"):
        root = Path(urlparse(url).path) if url else config.data_dir
        return Storage(DataFiles(root))
    if url.startswith("s3://"):
        from core.s3 import S3Storage

        return S3Storage.from_config(config)
    raise ValueError(f"APLSERVE_STORAGE_URL must start with file:// or s3://, not {url!r}")


def sweep_partials(settings: Settings, role: str) -> list[Removed]:
    """At start: remove the stale partial files this role ("api" or "worker") writes locally, the
    cache's interrupted downloads, and (s3) the bucket's abandoned multipart uploads."""
    storage = settings.storage
    scratch = storage.scratch
    local = scratch.api_partials() if role == "api" else scratch.worker_partials()
    removed = remove_stale([*local, *storage.partials()], settings.stale_file_seconds)
    try:
        aborted = storage.sweep(settings.stale_file_seconds)
    except StorageUnavailable:
        log.warning("the object storage did not answer; its incomplete uploads are swept next start")
        aborted = 0
    if aborted:
        log.warning("removed %d abandoned upload(s) from the object storage", aborted)
    return removed


def backoff(attempt: int, base: float = 0.5, cap: float = 8.0) -> None:
    """Sleep before retry number `attempt` (0-based): 0.5 s, 1 s, 2 s ... at most `cap`."""
    time.sleep(min(cap, base * 2**attempt))
