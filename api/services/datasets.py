"""Datasets: storing an ingested upload, listing, reading and deleting them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api import schemas
from api.services.pagination import Page, paginate
from core.db.models import Dataset, Job
from core.errors import AppError, not_found
from core.files import DataFiles
from core.jobs.status import ACTIVE_STATUSES

log = logging.getLogger(__name__)


def to_schema(row: Dataset) -> schemas.Dataset:
    return schemas.Dataset.model_validate(row, from_attributes=True)


def get_owned(session: Session, owner_id: str, dataset_id: str, *, lock: bool = False) -> Dataset:
    """The caller's dataset; another owner's id reads as missing (404, never 403)."""
    statement = select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == owner_id)
    if lock:
        statement = statement.with_for_update()
    row = session.scalar(statement)
    if row is None:
        raise not_found("dataset")
    return row


def list_owned(session: Session, owner_id: str, *, limit: int, cursor: str | None) -> Page[Dataset]:
    return paginate(
        session, select(Dataset).where(Dataset.owner_id == owner_id), Dataset, limit=limit, cursor=cursor
    )


def create(session: Session, *, dataset_id: str, owner_id: str, fields: dict[str, Any]) -> Dataset:
    """Insert the row for an ingested dataset whose files are already in place; commits."""
    row = Dataset(id=dataset_id, owner_id=owner_id, **fields)
    session.add(row)
    session.commit()
    return row


def delete(session: Session, files: DataFiles, owner_id: str, dataset_id: str) -> None:
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
    session.delete(row)
    session.commit()
    remove_files(files.dataset(dataset_id))


def remove_files(directory: Path) -> None:
    """Remove a dataset's directory; leftovers are logged, never shown to the client."""

    def _log(_function: object, path: str, exc_info: tuple[type[BaseException], BaseException, Any]) -> None:
        log.warning("could not remove %s: %s", path, exc_info[1])

    if directory.exists():
        shutil.rmtree(directory, onerror=_log)
