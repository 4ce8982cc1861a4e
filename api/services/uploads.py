"""Uploads: a received file becomes a dataset (dedupe, quota, ingest, store), or nothing is kept.

Reading and normalizing a dataset is CPU and disk work that can take a while, so it
never holds a database connection: each database step (the lookup of identical bytes,
the quota, the insert) opens a short session of its own from the `sessions` factory the
caller passes (the request's `Database.session`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

from sqlalchemy.orm import Session

from api import quotas, schemas
from api.ingest import IngestResult, ReceivedUpload, UploadOptions, ingest_dataset
from api.ingest.upload import FORM_OVERHEAD_BYTES
from api.services import datasets
from core.db.models import Dataset, new_id
from core.errors import AppError
from core.settings import Settings

#: Makes a new session; the caller closes it.
Sessions = Callable[[], Session]

NAME_MAX = 200


def dataset_name(upload: ReceivedUpload) -> str:
    """The `name` field, else the file name's stem; 422 past NAME_MAX characters."""
    name = (upload.fields.get("name") or "").strip() or PurePath(upload.filename).stem or "dataset"
    if len(name) > NAME_MAX:
        raise AppError(
            422,
            "validation_error",
            f"name: at most {NAME_MAX} characters",
            errors=[{"loc": ["body", "name"], "msg": f"at most {NAME_MAX} characters"}],
        )
    return name


def check_before_body(session: Session, settings: Settings, owner_id: str, content_length: str) -> None:
    """Refuse what can be refused before the body is read (blocking).

    429 `quota_exceeded` when the owner's datasets would pass the storage quota with what
    the file can at most be (the declared Content-Length, less the form's overhead);
    503 when a remote storage does not answer.
    """
    if settings.quota_dataset_bytes and content_length.isdigit():
        at_least = max(0, int(content_length) - FORM_OVERHEAD_BYTES)
        quotas.check_dataset_bytes(session, owner_id, settings, at_least)
    if settings.storage.remote:
        settings.storage.check()


def ingest_and_store(
    sessions: Sessions, settings: Settings, owner_id: str, upload: ReceivedUpload, dedupe: bool
) -> tuple[schemas.Dataset, bool]:
    """Validate, normalize and store an uploaded file as the owner's dataset (blocking).

    Returns (dataset, created): with `dedupe`, identical bytes read with the same
    options give back the existing dataset and nothing is written (nor counted against
    the storage quota). A dataset that fails validation or the quota leaves nothing behind.
    """
    dataset_name(upload)  # reject a bad name before the work
    options = UploadOptions.from_fields(upload.fields)
    with sessions() as session:
        existing = datasets.same_file(session, owner_id, upload.sha256)
        reused = datasets.reusable(existing, options.as_fields()) if dedupe else None
        if reused is not None:
            return datasets.to_schema(reused), False
        duplicate = datasets.duplicate_warning(existing, options.as_fields())
    with sessions() as session:
        quotas.check_dataset_bytes(session, owner_id, settings, upload.size_bytes)
    dataset_id = new_id()
    storage = settings.storage
    result = ingest_dataset(
        upload.body, upload.filename, storage.scratch.dataset(dataset_id), options=options
    )
    try:
        storage.publish_dataset(dataset_id)  # s3: streamed to the bucket (multipart when large)
        with sessions() as session:
            row = _store(session, settings, owner_id, dataset_id, upload, result, options, duplicate)
            return datasets.to_schema(row), True
    except BaseException:
        datasets.discard_files(storage, dataset_id)
        raise


def _store(
    session: Session,
    settings: Settings,
    owner_id: str,
    dataset_id: str,
    upload: ReceivedUpload,
    result: IngestResult,
    options: UploadOptions,
    duplicate: str | None,
) -> Dataset:
    fields = result.as_dict() | {
        "name": dataset_name(upload),
        "size_bytes": upload.size_bytes,
        "sha256": upload.sha256,
        "upload_options": options.as_fields(),
    }
    if duplicate is not None:
        fields["warnings"] = [*result.warnings, duplicate]
    return datasets.create(session, settings, dataset_id=dataset_id, owner_id=owner_id, fields=fields)
