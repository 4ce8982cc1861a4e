"""Models: the registry (list, read, rename, delete), artifact files (tar and the cached ONNX export).

A Model row is written by the worker after its artifact archive is stored
(artifacts/<model_id>.tar in the storage layout, core.objects). The ONNX export is made
from that archive on the first request for it and stored beside it (<model_id>.onnx.zip,
through the same storage interface), so it costs one export per model, not one per
download, whichever API host answers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.services.pagination import Page, id_starts_with, paginate
from api.serving.engine import ModelRef
from api.serving.schemas import (
    GLOBAL_THRESHOLD,
    Evaluation,
    ExcludedLabel,
    LabelDisagreement,
    LabelIssue,
    LabelIssueList,
    ModelArtifact,
    ModelDecision,
    ModelList,
)
from api.serving.schemas import Model as ModelSchema
from apl.atomic import file_sha256 as hashed_file
from core.db.models import Dataset, Job, Model
from core.errors import AppError, not_found
from core.files import ARCHIVE_SUFFIX, ONNX_SUFFIX, DataFiles
from core.objects import StorageUnavailable
from core.settings import Settings

log = logging.getLogger(__name__)

_export_locks: dict[Path, threading.Lock] = {}
_export_locks_guard = threading.Lock()
_digests: dict[tuple[Path, int, int], str] = {}


def get_owned(session: Session, owner_id: str, model_id: str) -> Model:
    """The caller's model; another owner's id reads as missing (404, never 403)."""
    row = session.scalar(select(Model).where(Model.id == model_id, Model.owner_id == owner_id))
    if row is None:
        raise not_found("model")
    return row


def list_owned(
    session: Session,
    owner_id: str,
    *,
    limit: int,
    cursor: str | None,
    id_prefix: str | None = None,
    dataset_id: str | None = None,
    sweep_id: str | None = None,
) -> Page[Model]:
    """A page of the owner's models, newest first; `dataset_id` / `sweep_id` keep those whose job
    trained on that dataset / was a child of that sweep."""
    statement = select(Model).where(Model.owner_id == owner_id)
    if id_prefix is not None:
        statement = statement.where(id_starts_with(Model.id, id_prefix))
    if dataset_id is not None or sweep_id is not None:
        statement = statement.join(Job, Job.id == Model.job_id)
        if dataset_id is not None:
            statement = statement.where(Job.dataset_id == dataset_id)
        if sweep_id is not None:
            statement = statement.where(Job.sweep_id == sweep_id)
    return paginate(session, statement, Model, limit=limit, cursor=cursor)


@dataclass(frozen=True)
class Origin:
    """What a model's job says about it: what tells models apart in a list (issue 28)."""

    dataset_id: str | None = None
    dataset_name: str | None = None
    loss: str | None = None
    sweep_id: str | None = None
    role: str | None = None
    job_name: str | None = None


def origins(session: Session, rows: Sequence[Model]) -> dict[str, Origin]:
    """job id -> its Origin, for a page of models, in one query (the loss read from the spec's JSON)."""
    if not rows:
        return {}
    statement = (
        select(
            Job.id,
            Job.dataset_id,
            Dataset.name,
            Job.spec[("loss", "name")].as_string(),
            Job.sweep_id,
            Job.role,
            Job.name,
        )
        .outerjoin(Dataset, Dataset.id == Job.dataset_id)
        .where(Job.id.in_({row.job_id for row in rows}))
    )
    return {job_id: Origin(*fields) for job_id, *fields in session.execute(statement)}


def to_schema(row: Model, origin: Origin | None = None) -> ModelSchema:
    origin = origin or Origin()
    metrics: dict[str, Any] = dict(row.metrics or {})
    fallback = [str(label) for label in metrics.get("fallback_labels", [])]
    return ModelSchema(
        id=row.id,
        name=row.name or origin.job_name,
        job_id=row.job_id,
        dataset_id=origin.dataset_id,
        dataset_name=origin.dataset_name,
        loss=origin.loss,
        sweep_id=origin.sweep_id,
        role=origin.role,  # type: ignore[arg-type]
        base_model=row.base_model,
        modality=row.modality,  # type: ignore[arg-type]
        labels=list(row.labels),
        thresholds={str(k): float(v) for k, v in row.thresholds.items()},
        threshold_fallback_labels=fallback,
        global_threshold=GLOBAL_THRESHOLD,
        metrics=metrics,
        kind=metrics.get("kind", "fine_tuned"),
        comparison=(metrics.get("baselines") or {}).get("comparison"),
        warnings=[str(w) for w in metrics.get("warnings", [])],
        decision=ModelDecision.model_validate(row.decision) if row.decision else None,
        evaluation_url=f"/v1/models/{row.id}/evaluation" if row.evaluation else None,
        artifact=ModelArtifact(
            sha256=row.sha256, size_bytes=row.size_bytes, url=f"/v1/models/{row.id}/artifact"
        ),
        created_at=row.created_at,
    )


def describe(session: Session, rows: Sequence[Model]) -> list[ModelSchema]:
    """The Model documents of some rows, with what their jobs say (one query for the lot)."""
    found = origins(session, rows)
    return [to_schema(row, found.get(row.job_id)) for row in rows]


def list_page(
    session: Session,
    owner_id: str,
    *,
    limit: int,
    cursor: str | None,
    id_prefix: str | None = None,
    dataset_id: str | None = None,
    sweep_id: str | None = None,
) -> ModelList:
    """GET /v1/models: a page of the owner's models as documents."""
    page = list_owned(
        session,
        owner_id,
        limit=limit,
        cursor=cursor,
        id_prefix=id_prefix,
        dataset_id=dataset_id,
        sweep_id=sweep_id,
    )
    return ModelList(items=describe(session, page.items), next_cursor=page.next_cursor)


def document_owned(session: Session, owner_id: str, model_id: str) -> ModelSchema:
    """GET /v1/models/{id}: the caller's model as a document (404 for anyone else's)."""
    return describe(session, [get_owned(session, owner_id, model_id)])[0]


def rename(session: Session, owner_id: str, model_id: str, name: str | None) -> ModelSchema:
    """Give the model a name, or with None take it back (it shows its job's name again); commits."""
    row = get_owned(session, owner_id, model_id)
    row.name = name
    session.commit()
    return describe(session, [row])[0]


def min_labels(row: Model) -> int:
    """The model's default min_labels (0 for models published before decision policies)."""
    return int((row.decision or {}).get("min_labels", 0))


def evaluation(row: Model) -> Evaluation:
    """The evaluation stored when the model was published; 404 for models published before."""
    if not row.evaluation:
        raise AppError(
            404,
            "evaluation_unavailable",
            "this model has no stored evaluation: it was published before evaluations were kept",
        )
    baselines = (row.metrics or {}).get("baselines")
    return Evaluation.model_validate({**row.evaluation, "model_id": row.id, "baselines": baselines})


def _rank_cursor(rank: int) -> str:
    raw = json.dumps({"rank": rank}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_rank(cursor: str | None) -> int:
    """The rank a label-issues page starts after (0 for the first page); 400 for a foreign cursor."""
    if cursor is None:
        return 0
    try:
        rank = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["rank"]
        if not isinstance(rank, int) or rank < 0:
            raise ValueError("bad rank")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise AppError(400, "invalid_cursor", "the cursor is not one this API returned") from None
    return rank


def label_issues(settings: Settings, row: Model, *, limit: int, cursor: str | None) -> LabelIssueList:
    """One page of the model's suspect-label ranking (written by the worker, `apl.label_issues`).

    The ranking is fixed once written, so a rank cursor never skips or repeats a sample.
    404 `label_issues_unavailable` for a model published before rankings were stored.
    """
    start = _cursor_rank(cursor)
    try:
        path = settings.storage.fetch_label_issues(row.id)
        if path is None:
            raise FileNotFoundError(row.id)
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AppError(
            404,
            "label_issues_unavailable",
            "this model has no suspect-label ranking: it was published before rankings were kept, "
            "or its validation split could not be ranked",
        ) from None
    items = document["items"]
    page = items[start : start + limit]
    return LabelIssueList(
        model_id=row.id,
        dataset_id=document.get("dataset_id"),
        split="validation",
        num_samples=len(items),
        num_flagged=int(document.get("num_flagged", 0)),
        method=str(document.get("method", "")),
        judged_labels=document.get("judged_labels"),
        excluded_labels=[ExcludedLabel(**entry) for entry in document.get("excluded_labels", [])],
        verdict=document.get("verdict"),
        items=[
            LabelIssue(
                rank=start + i + 1,
                index=item["index"],
                score=item["score"],
                flagged=item["flagged"],
                given_labels=item["given"],
                unknown_labels=item["unknown"],
                disagreements=[LabelDisagreement(**d) for d in item["disagreements"]],
                text=item.get("text"),
                image=item.get("image"),
            )
            for i, item in enumerate(page)
        ],
        next_cursor=_rank_cursor(start + limit) if start + limit < len(items) else None,
    )


def artifact_path(settings: Settings, row: Model) -> Path:
    """A local copy of a model's archive (s3: from the node-local cache, downloaded and verified once);
    503 `model_unavailable` when it is missing, `storage_unavailable` when the storage does not answer."""
    storage = settings.storage
    inside = storage.local.stored_artifact(row.artifact_path) is not None
    path = storage.fetch(row.artifact_path) if inside else None
    if path is None:
        log.error("the artifact of model %s is missing", row.id)
        raise AppError(503, "model_unavailable", "the model's artifact is not available on this server")
    return path


def serving_ref(settings: Settings, row: Model) -> ModelRef:
    return ModelRef(id=row.id, path=artifact_path(settings, row), sha256=row.sha256, modality=row.modality)


def _lock_for(path: Path) -> threading.Lock:
    with _export_locks_guard:
        return _export_locks.setdefault(path, threading.Lock())


def onnx_archive(settings: Settings, row: Model) -> Path:
    """The ONNX export (zip) of a model, made once, stored beside its archive (through the
    storage: on s3 any API host then finds it) and cached locally (blocking)."""
    source = artifact_path(settings, row)
    storage = settings.storage
    relative = DataFiles.onnx_relative(row.artifact_path, row.id)
    with _lock_for(storage.scratch.root / relative):
        found = storage.fetch(relative)
        # file://: a stale export (an archive replaced since) is made again; s3 archives never change.
        if found is not None and (storage.remote or found.stat().st_mtime >= source.stat().st_mtime):
            return found
        from apl.errors import ArtifactError
        from apl.export import export_onnx_archive

        target = storage.scratch.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            extra = {"model_id": row.id, "artifact_sha256": row.sha256, "job_id": row.job_id}
            export_onnx_archive(source, target, extra=extra)
        except ArtifactError as exc:
            log.warning("model %s: ONNX export failed", row.id, exc_info=True)
            raise AppError(422, "onnx_export_failed", str(exc)) from None
        return storage.publish_fetched(target)


ArtifactFormat = Literal["tar", "onnx"]


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    media_type: str
    filename: str


def download(settings: Settings, row: Model, fmt: ArtifactFormat) -> Download:
    """The file to send for a model download (blocking: the first ONNX request exports)."""
    if fmt == "onnx":
        path = onnx_archive(settings, row)
        return Download(path, file_sha256(path), "application/zip", f"aplserve-model-{row.id}{ONNX_SUFFIX}")
    path = artifact_path(settings, row)
    return Download(path, row.sha256, "application/x-tar", f"aplserve-model-{row.id}{ARCHIVE_SUFFIX}")


def download_owned(
    session: Session, settings: Settings, owner_id: str, model_id: str, fmt: ArtifactFormat
) -> Download:
    """The caller's model download; the session is closed before the file is made (blocking).

    An ONNX export can take a while: no database connection is held meanwhile.
    """
    row = get_owned(session, owner_id, model_id)
    session.close()
    return download(settings, row, fmt)


def delete(session: Session, settings: Settings, owner_id: str, model_id: str) -> None:
    """Delete the model row, then its archive and ONNX export; commits.

    The job that trained it stays, with its metrics, and no longer points at a model.
    A request already being answered by a loaded copy of the model still completes.
    """
    row = get_owned(session, owner_id, model_id)
    storage = settings.storage
    storage.check()  # a storage that does not answer: 503 before anything is deleted
    model_id, artifact = row.id, row.artifact_path
    session.execute(update(Job).where(Job.model_id == row.id).values(model_id=None))
    session.delete(row)
    session.commit()
    try:
        storage.delete_model(model_id, artifact)
    except StorageUnavailable:  # logged, never shown: the model is gone either way
        log.warning("could not remove the stored files of model %s", model_id)


def file_sha256(path: Path) -> str:
    """`apl.atomic.file_sha256`, remembered per (path, size, mtime) so repeated downloads hash once."""
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        digest = _digests[key] = hashed_file(path)
    return digest
