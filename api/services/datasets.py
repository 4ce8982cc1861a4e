"""Datasets: storing an ingested upload, listing, reading and deleting them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api import quotas, schemas
from api.services.pagination import Page, id_starts_with, paginate
from apl.formats import IMAGES_DIR, SAMPLES_FILE
from core.db.models import Dataset, Job
from core.errors import AppError, not_found
from core.jobs.status import ACTIVE_STATUSES
from core.objects import Storage, StorageUnavailable
from core.settings import Settings
from core.sweeps.candidates import DatasetProfile, profile

log = logging.getLogger(__name__)


def dataset_profile(row: Dataset) -> DatasetProfile:
    """The dataset's profile (core.sweeps.candidates) from the counts its row holds."""
    return profile(row.num_samples, row.label_counts, row.label_cardinality, row.unknown_cells)


def to_schema(row: Dataset) -> schemas.Dataset:
    document = schemas.Dataset.model_validate(row, from_attributes=True)
    document.profile = schemas.DatasetProfile.model_validate(dataset_profile(row).as_dict())
    return document


def get_owned(session: Session, owner_id: str, dataset_id: str, *, lock: bool = False) -> Dataset:
    """The caller's dataset; another owner's id reads as missing (404, never 403)."""
    statement = select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == owner_id)
    if lock:
        statement = statement.with_for_update()
    row = session.scalar(statement)
    if row is None:
        raise not_found("dataset")
    return row


def list_owned(
    session: Session, owner_id: str, *, limit: int, cursor: str | None, id_prefix: str | None = None
) -> Page[Dataset]:
    statement = select(Dataset).where(Dataset.owner_id == owner_id)
    if id_prefix is not None:
        statement = statement.where(id_starts_with(Dataset.id, id_prefix))
    return paginate(session, statement, Dataset, limit=limit, cursor=cursor)


def same_file(session: Session, owner_id: str, sha256: str) -> list[Dataset]:
    """The caller's datasets uploaded from exactly these bytes, oldest first."""
    statement = (
        select(Dataset)
        .where(Dataset.owner_id == owner_id, Dataset.sha256 == sha256)
        .order_by(Dataset.created_at, Dataset.id)
    )
    return list(session.scalars(statement))


def duplicate_warning(existing: list[Dataset], options: dict[str, str]) -> str | None:
    """A sentence naming the dataset this upload repeats, or None for a new file."""
    if not existing:
        return None
    same = [row for row in existing if (row.upload_options or {}) == options]
    first = (same or existing)[0]
    how = "" if same else " (read with other upload options)"
    return (
        f"This file is identical to dataset {first.id} '{first.name}'{how}, uploaded "
        f"{first.created_at:%Y-%m-%d %H:%M} UTC; upload with ?dedupe=true to get that dataset "
        "back instead of a copy."
    )


def reusable(existing: list[Dataset], options: dict[str, str]) -> Dataset | None:
    """The dataset ?dedupe=true answers with: same bytes, read with the same options."""
    return next((row for row in existing if (row.upload_options or {}) == options), None)


def create(
    session: Session, settings: Settings, *, dataset_id: str, owner_id: str, fields: dict[str, Any]
) -> Dataset:
    """Insert the row for an ingested dataset whose files are already in place; commits.

    The owner's storage quota is checked with the new row counted and the owner locked,
    so concurrent uploads cannot pass it together (429 `quota_exceeded`, nothing kept).
    """
    quotas.lock_owner(session, owner_id)
    row = Dataset(id=dataset_id, owner_id=owner_id, **fields)
    session.add(row)
    session.flush()
    try:
        quotas.check_dataset_bytes(session, owner_id, settings, row.size_bytes, counted=True)
    except AppError:
        session.rollback()
        raise
    session.commit()
    return row


def delete(session: Session, storage: Storage, owner_id: str, dataset_id: str) -> None:
    """Delete the row, then the stored files; 409 while a queued or running job needs them
    (to train on, or as its test dataset).

    The row is locked (PostgreSQL) while the jobs are counted so that a job created
    at the same moment either sees the dataset or does not exist yet.
    """
    row = get_owned(session, owner_id, dataset_id, lock=True)
    in_use = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(or_(Job.dataset_id == row.id, Job.test_dataset_id == row.id), Job.status.in_(ACTIVE_STATUSES))
    )
    if in_use:
        raise AppError(
            409,
            "dataset_in_use",
            f"{in_use} queued or running job(s) use this dataset; cancel them or wait for them to finish",
        )
    storage.check()  # a storage that does not answer: 503 before anything is deleted
    session.delete(row)
    session.commit()
    discard_files(storage, dataset_id)


def discard_files(storage: Storage, dataset_id: str) -> None:
    """Remove a dataset's stored files; leftovers are logged, never shown to the client."""
    try:
        storage.delete_dataset(dataset_id)
    except StorageUnavailable:
        log.warning("could not remove the stored files of dataset %s", dataset_id)


#: Media types of the stored image suffixes (the upload accepts exactly these: apl.formats).
IMAGE_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def sample_image(
    session: Session, storage: Storage, owner_id: str, dataset_id: str, index: int
) -> tuple[Path, str]:
    """The stored image file of sample `index` (0-based, upload order) of the caller's dataset,
    and its media type.

    For the dashboard's suspect-label thumbnails: an <img> cannot send the Bearer key, so the
    page fetches the bytes through the API. 404 for another owner's dataset, a text dataset, an
    index past the end, or a stored path outside `images/` (never served, whatever
    samples.jsonl says).
    """
    row = get_owned(session, owner_id, dataset_id)
    missing = AppError(404, "not_found", f"sample {index} of this dataset has no stored image")
    if index < 0 or index >= row.num_samples:
        raise missing
    root = storage.dataset_dir(row.id)
    if root is None:
        raise missing
    with (root / SAMPLES_FILE).open(encoding="utf-8") as handle:
        line = next((text for i, text in enumerate(handle) if i == index), "")
    image = json.loads(line).get("image") if line.strip() else None
    if not isinstance(image, str):
        raise missing
    path = (root / image).resolve()
    media_type = IMAGE_MEDIA_TYPES.get(path.suffix.lower())
    if not path.is_relative_to((root / IMAGES_DIR).resolve()) or media_type is None or not path.is_file():
        raise missing
    return path, media_type
