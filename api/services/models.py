"""Models: the registry (list, read, delete), artifact files (tar and the cached ONNX export).

A Model row is written by the worker after its artifact archive is in place
(<data_dir>/artifacts/<model_id>.tar). The ONNX export is made from that archive on
the first request for it and kept beside it (<model_id>.onnx.zip), so it costs one
export per model, not one per download.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.db.models import Job, Model
from api.errors import AppError, not_found
from api.services.pagination import Page, paginate
from api.serving.engine import ModelRef
from api.serving.schemas import GLOBAL_THRESHOLD, ModelArtifact
from api.serving.schemas import Model as ModelSchema
from api.settings import Settings

log = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx.zip"
_export_locks: dict[Path, threading.Lock] = {}
_export_locks_guard = threading.Lock()
_digests: dict[tuple[Path, int, int], str] = {}


def get_owned(session: Session, owner_id: str, model_id: str) -> Model:
    """The caller's model; another owner's id reads as missing (404, never 403)."""
    row = session.scalar(select(Model).where(Model.id == model_id, Model.owner_id == owner_id))
    if row is None:
        raise not_found("model")
    return row


def list_owned(session: Session, owner_id: str, *, limit: int, cursor: str | None) -> Page[Model]:
    statement = select(Model).where(Model.owner_id == owner_id)
    return paginate(session, statement, Model, limit=limit, cursor=cursor)


def dataset_ids(session: Session, rows: list[Model]) -> dict[str, str | None]:
    """job id -> the dataset it trained on, for a page of models (one query)."""
    if not rows:
        return {}
    pairs = session.execute(select(Job.id, Job.dataset_id).where(Job.id.in_([row.job_id for row in rows])))
    return {job_id: dataset_id for job_id, dataset_id in pairs}


def to_schema(row: Model, dataset_id: str | None) -> ModelSchema:
    metrics: dict[str, Any] = dict(row.metrics or {})
    fallback = [str(label) for label in metrics.get("fallback_labels", [])]
    return ModelSchema(
        id=row.id,
        job_id=row.job_id,
        dataset_id=dataset_id,
        base_model=row.base_model,
        modality=row.modality,  # type: ignore[arg-type]
        labels=list(row.labels),
        thresholds={str(k): float(v) for k, v in row.thresholds.items()},
        threshold_fallback_labels=fallback,
        global_threshold=GLOBAL_THRESHOLD,
        metrics=metrics,
        artifact=ModelArtifact(
            sha256=row.sha256, size_bytes=row.size_bytes, url=f"/v1/models/{row.id}/artifact"
        ),
        created_at=row.created_at,
    )


def _archive_location(settings: Settings, row: Model) -> Path | None:
    """Where this server keeps the model's archive; None when the row points outside the data dir."""
    data_dir = settings.data_dir.resolve()
    archive = (data_dir / row.artifact_path).resolve()
    return archive if archive.is_relative_to(data_dir) else None


def _onnx_location(archive: Path, model_id: str) -> Path:
    """The cached ONNX export, kept beside the archive."""
    return archive.with_name(f"{model_id}{ONNX_SUFFIX}")


def artifact_path(settings: Settings, row: Model) -> Path:
    """The archive file of a model; 503 `model_unavailable` when it is missing on this server."""
    path = _archive_location(settings, row)
    if path is None or not path.is_file():
        log.error("the artifact of model %s is missing", row.id)
        raise AppError(503, "model_unavailable", "the model's artifact is not available on this server")
    return path


def serving_ref(settings: Settings, row: Model) -> ModelRef:
    return ModelRef(id=row.id, path=artifact_path(settings, row), sha256=row.sha256, modality=row.modality)


def _lock_for(path: Path) -> threading.Lock:
    with _export_locks_guard:
        return _export_locks.setdefault(path, threading.Lock())


def onnx_archive(settings: Settings, row: Model) -> Path:
    """The ONNX export (zip) of a model, made once and cached beside the artifact (blocking)."""
    source = artifact_path(settings, row)
    target = _onnx_location(source, row.id)
    with _lock_for(target):
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            return target
        from apl.errors import ArtifactError
        from apl.export import export_onnx_archive

        try:
            extra = {"model_id": row.id, "artifact_sha256": row.sha256, "job_id": row.job_id}
            export_onnx_archive(source, target, extra=extra)
        except ArtifactError as exc:
            log.warning("model %s: ONNX export failed", row.id, exc_info=True)
            raise AppError(422, "onnx_export_failed", str(exc)) from None
    return target


def delete(session: Session, settings: Settings, owner_id: str, model_id: str) -> None:
    """Delete the model row, then its archive and ONNX export; commits.

    The job that trained it stays, with its metrics, and no longer points at a model.
    A request already being answered by a loaded copy of the model still completes.
    """
    row = get_owned(session, owner_id, model_id)
    archive = _archive_location(settings, row)
    files = (archive, _onnx_location(archive, row.id)) if archive is not None else ()
    session.execute(update(Job).where(Job.model_id == row.id).values(model_id=None))
    session.delete(row)
    session.commit()
    for path in files:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # logged, never shown: the model is gone either way
            log.warning("could not remove %s: %s", path, exc)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so repeated downloads hash once."""
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        _digests[key] = digest
    return digest
