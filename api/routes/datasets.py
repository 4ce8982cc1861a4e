"""/v1/datasets: upload (streamed to disk, validated off the event loop), list, get, delete."""

from __future__ import annotations

from functools import partial
from pathlib import PurePath
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Path as PathParam
from fastapi import Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api import quotas
from api.deps import IdPrefixQuery, OwnerDep, SessionDep, SettingsDep
from api.ingest import IngestResult, ReceivedUpload, UploadOptions, ingest_dataset, receive_upload
from api.ingest.upload import FORM_OVERHEAD_BYTES
from api.routing import APIRouter
from api.schemas import LIST_PROBLEMS, Dataset, DatasetList, problem_responses
from api.services import datasets as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.state import app_state
from core.db.models import new_id
from core.db.session import session_factory
from core.error_codes import CONTENT, ERROR_CODES, UPLOAD
from core.errors import AppError
from core.settings import Settings

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=problem_responses("unauthorized"))

NAME_MAX = 200

UPLOAD_FORMATS = """\
Three file formats, told apart by the file name's extension:

* **Text CSV** (`.csv`, UTF-8, a header row): columns `text` and `labels`; `labels` holds the \
label names separated by `|` (`action|comedy`), empty for a sample with no label. Quote a field \
that contains a comma (`"Hello, world"`). Other columns are ignored.
* **Text JSONL** (`.jsonl`): one object a line, `{"text": "...", "labels": ["action", "comedy"]}`.
* **Images ZIP** (`.zip`): PNG, JPEG or WebP files plus `labels.csv` at the ZIP's root with \
columns `filename,labels` (`filename` relative to the root, e.g. `img/001.png`; labels as in the \
text CSV). Every image must be listed, and every listed file must be there.

Columns named otherwise are mapped with `text_column`, `labels_column` (CSV and JSONL keys) and \
`filename_column` (the ZIP's labels.csv). `label_separator` sets what separates labels in a CSV \
cell: with the default `|`, a cell holding `,` or `;` is refused (422 \
`suspicious_label_separator`) because it usually means another separator; naming the separator, \
even `|`, accepts such cells. CSV fields may be separated by `,`, `;` (Excel where the decimal \
mark is a comma) or tabs: the header tells which (the one under which it names the required \
columns), or the form field `delimiter` (`,`, `;`, `|` or `tab`) says so.
"""


#: What an upload can be refused with: the request's problems, then every content problem of the file.
UPLOAD_PROBLEMS: tuple[str | tuple[int, str], ...] = (
    "validation_error",
    *(entry.code for entry in ERROR_CODES.values() if entry.area == UPLOAD),
    *((422, entry.code) for entry in ERROR_CODES.values() if entry.area == CONTENT),
)


def _text_field(description: str, max_length: int = 100) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "description": description}


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": UPLOAD_FORMATS,
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
                        "name": _text_field("Defaults to the file name.", NAME_MAX),
                        "text_column": _text_field(
                            "The CSV column (or JSONL key) of the texts; default `text`."
                        ),
                        "labels_column": _text_field(
                            "The CSV column (or JSONL key) of the labels; default `labels`."
                        ),
                        "filename_column": _text_field(
                            "ZIP uploads: the labels.csv column of the image paths; default `filename`."
                        ),
                        "label_separator": _text_field(
                            "What separates label names in a CSV labels cell; default `|`.", 8
                        ),
                        "delimiter": _text_field(
                            "The CSV field delimiter: `,`, `;`, `|` or `tab`; default: read from the "
                            "header (the one under which it names the required columns).",
                            3,
                        ),
                    },
                },
                "encoding": {"file": {"contentType": "text/csv, application/x-ndjson, application/zip"}},
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
    settings: Settings,
    owner_id: str,
    dataset_id: str,
    upload: ReceivedUpload,
    result: IngestResult,
    options: UploadOptions,
    duplicate: str | None,
) -> Dataset:
    fields = result.as_dict() | {
        "name": _dataset_name(upload),
        "size_bytes": upload.size_bytes,
        "sha256": upload.sha256,
        "upload_options": options.as_fields(),
    }
    if duplicate is not None:
        fields["warnings"] = [*result.warnings, duplicate]
    with session_factory(settings)() as session:
        return service.to_schema(
            service.create(session, settings, dataset_id=dataset_id, owner_id=owner_id, fields=fields)
        )


def _check_room(settings: Settings, owner_id: str, adding: int) -> None:
    with session_factory(settings)() as session:
        quotas.check_dataset_bytes(session, owner_id, settings, adding)


def _ingest_and_store(
    settings: Settings, owner_id: str, upload: ReceivedUpload, dedupe: bool
) -> tuple[Dataset, bool]:
    """Runs in a worker thread: parsing and writing a dataset is CPU and disk work.

    Returns (dataset, created): with `dedupe`, identical bytes read with the same
    options give back the existing dataset and nothing is written (nor counted against
    the storage quota).
    """
    _dataset_name(upload)  # reject a bad name before the work
    options = UploadOptions.from_fields(upload.fields)
    with session_factory(settings)() as session:
        existing = service.same_file(session, owner_id, upload.sha256)
        reused = service.reusable(existing, options.as_fields()) if dedupe else None
        if reused is not None:
            return service.to_schema(reused), False
        duplicate = service.duplicate_warning(existing, options.as_fields())
    _check_room(settings, owner_id, upload.size_bytes)
    dataset_id = new_id()
    storage = settings.storage
    result = ingest_dataset(
        upload.body, upload.filename, storage.scratch.dataset(dataset_id), options=options
    )
    try:
        storage.publish_dataset(dataset_id)  # s3: streamed to the bucket (multipart when large)
        return _store(settings, owner_id, dataset_id, upload, result, options, duplicate), True
    except BaseException:
        service.discard_files(storage, dataset_id)
        raise


@router.post(
    "",
    status_code=201,
    response_model=Dataset,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {
            "model": Dataset,
            "description": "With `?dedupe=true`: the existing dataset of identical bytes.",
        },
        **problem_responses(*UPLOAD_PROBLEMS),
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    principal: OwnerDep,
    settings: SettingsDep,
    dedupe: Annotated[
        bool,
        Query(
            description="Identical bytes already uploaded (read with the same options) return that "
            "dataset (200) instead of a new copy; without it the copy gets a warning naming it."
        ),
    ] = False,
) -> Dataset:
    """Upload a dataset (multipart: `file`, optional `name` and reading options).

    The body is streamed into storage as it arrives (the data dir, or the parts of
    an S3 multipart upload) with the size limit, then validated and normalized; a
    dataset that fails validation leaves nothing behind. The upload formats and options
    are described with the request body below. 429
    `quota_exceeded` when the owner's datasets would pass the storage quota (checked
    before the body is read when Content-Length says so); 507 `storage_full` when the
    server's disk is full.
    """
    declared = request.headers.get("content-length", "")
    if settings.quota_dataset_bytes and declared.isdigit():
        # The form's overhead is not dataset bytes; judge by what the file can at most be.
        at_least = max(0, int(declared) - FORM_OVERHEAD_BYTES)
        await run_in_threadpool(_check_room, settings, principal.owner_id, at_least)
    if settings.storage.remote:  # an unreachable bucket answers 503 before the body is read
        await run_in_threadpool(settings.storage.check)
    upload = await receive_upload(request, settings.storage, settings.max_upload_bytes)
    try:
        dataset, created = await anyio.to_thread.run_sync(
            partial(_ingest_and_store, settings, principal.owner_id, upload, dedupe),
            limiter=app_state(request.app).ingest_limiter,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(upload.body.discard)
    if created:
        app_state(request.app).metrics.upload_bytes.inc(upload.size_bytes)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return dataset


@router.get("", response_model=DatasetList, responses=problem_responses(*LIST_PROBLEMS))
def list_datasets(
    principal: OwnerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    id_prefix: IdPrefixQuery = None,
) -> DatasetList:
    """The caller's datasets, newest first."""
    page = service.list_owned(session, principal.owner_id, limit=limit, cursor=cursor, id_prefix=id_prefix)
    return DatasetList(items=[service.to_schema(row) for row in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", response_model=Dataset, responses=problem_responses("not_found"))
def get_dataset(dataset_id: str, principal: OwnerDep, session: SessionDep) -> Dataset:
    return service.to_schema(service.get_owned(session, principal.owner_id, dataset_id))


@router.get(
    "/{dataset_id}/samples/{index}/image",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
            "description": "The stored image file of the sample, as uploaded.",
        },
        **problem_responses("not_found", "validation_error"),
    },
)
def get_sample_image(
    dataset_id: str,
    index: Annotated[int, PathParam(ge=0, description="The sample's position (0-based, upload order)")],
    principal: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    """One sample's image (image datasets), e.g. for a suspect label's thumbnail.

    404 `not_found` for another owner's dataset, a text dataset or an index past the end.
    """
    row = service.get_owned(session, principal.owner_id, dataset_id)
    path, media_type = service.sample_image(settings.storage, row, index)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses("not_found", "dataset_in_use"),
)
def delete_dataset(
    dataset_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete a dataset and its stored files; 409 `dataset_in_use` while a queued or running job needs it.

    503 `storage_unavailable` (nothing deleted) when the object storage does not answer.
    """
    service.delete(session, settings.storage, principal.owner_id, dataset_id)
    return Response(status_code=204)
