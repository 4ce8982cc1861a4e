"""/v1/datasets: upload (streamed to disk, validated off the event loop), list, get, delete."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import quotas
from api.deps import OwnerDep, SessionDep, SettingsDep
from api.ingest import IngestResult, ReceivedUpload, ingest_dataset, receive_upload
from api.ingest.upload import FORM_OVERHEAD_BYTES
from api.routing import APIRouter
from api.schemas import Dataset, DatasetList, problem_responses
from api.services import datasets as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.state import app_state
from core.db.models import new_id
from core.db.session import session_factory
from core.errors import AppError
from core.settings import Settings

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=problem_responses(401))

NAME_MAX = 200

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A text .csv or .jsonl, or a .zip of images with labels.csv.",
                        },
                        "name": {
                            "type": "string",
                            "maxLength": NAME_MAX,
                            "description": "Defaults to the file name.",
                        },
                    },
                }
            }
        },
    }
}


def _dataset_name(upload: ReceivedUpload) -> str:
    name = (upload.fields.get("name") or "").strip() or PurePath(upload.filename).stem or "dataset"
    if len(name) > NAME_MAX:
        raise AppError(
            422,
            "validation_error",
            f"name: at most {NAME_MAX} characters",
            errors=[{"loc": ["body", "name"], "msg": f"at most {NAME_MAX} characters"}],
        )
    return name


def _store(
    settings: Settings, owner_id: str, dataset_id: str, upload: ReceivedUpload, result: IngestResult
) -> Dataset:
    fields = result.as_dict() | {
        "name": _dataset_name(upload),
        "size_bytes": upload.size_bytes,
        "sha256": upload.sha256,
    }
    with session_factory(settings)() as session:
        return service.to_schema(
            service.create(session, settings, dataset_id=dataset_id, owner_id=owner_id, fields=fields)
        )


def _check_room(settings: Settings, owner_id: str, adding: int) -> None:
    with session_factory(settings)() as session:
        quotas.check_dataset_bytes(session, owner_id, settings, adding)


def _ingest_and_store(settings: Settings, owner_id: str, upload: ReceivedUpload) -> Dataset:
    """Runs in a worker thread: parsing and writing a dataset is CPU and disk work."""
    _dataset_name(upload)  # reject a bad name before the work
    _check_room(settings, owner_id, upload.size_bytes)
    dataset_id = new_id()
    dataset_dir = settings.files.dataset(dataset_id)
    result = ingest_dataset(upload.path, upload.filename, dataset_dir)
    try:
        return _store(settings, owner_id, dataset_id, upload, result)
    except BaseException:
        service.remove_files(dataset_dir)
        raise


@router.post(
    "",
    status_code=201,
    response_model=Dataset,
    openapi_extra=_UPLOAD_BODY,
    responses=problem_responses(400, 408, 413, 415, 422, 429, 507),
)
async def upload_dataset(request: Request, principal: OwnerDep, settings: SettingsDep) -> Dataset:
    """Upload a dataset (multipart: `file`, optional `name`).

    The body is streamed to disk with the size limit, then validated and
    normalized; a dataset that fails validation leaves nothing behind. 429
    `quota_exceeded` when the owner's datasets would pass the storage quota (checked
    before the body is read when Content-Length says so); 507 `storage_full` when the
    server's disk is full.
    """
    declared = request.headers.get("content-length", "")
    if settings.quota_dataset_bytes and declared.isdigit():
        # The form's overhead is not dataset bytes; judge by what the file can at most be.
        at_least = max(0, int(declared) - FORM_OVERHEAD_BYTES)
        await run_in_threadpool(_check_room, settings, principal.owner_id, at_least)
    upload = await receive_upload(request, settings.files.uploads, settings.max_upload_bytes)
    try:
        dataset = await run_in_threadpool(_ingest_and_store, settings, principal.owner_id, upload)
    finally:
        upload.path.unlink(missing_ok=True)
    app_state(request.app).metrics.upload_bytes.inc(upload.size_bytes)
    return dataset


@router.get("", response_model=DatasetList, responses=problem_responses(400))
def list_datasets(
    principal: OwnerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> DatasetList:
    """The caller's datasets, newest first."""
    page = service.list_owned(session, principal.owner_id, limit=limit, cursor=cursor)
    return DatasetList(items=[service.to_schema(row) for row in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", response_model=Dataset, responses=problem_responses(404))
def get_dataset(dataset_id: str, principal: OwnerDep, session: SessionDep) -> Dataset:
    return service.to_schema(service.get_owned(session, principal.owner_id, dataset_id))


@router.delete(
    "/{dataset_id}", status_code=204, response_class=Response, responses=problem_responses(404, 409)
)
def delete_dataset(
    dataset_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete a dataset and its stored files; 409 `dataset_in_use` while a queued or running job needs it."""
    service.delete(session, settings.files, principal.owner_id, dataset_id)
    return Response(status_code=204)
