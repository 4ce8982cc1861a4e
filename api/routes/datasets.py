"""/v1/datasets: upload (streamed to disk, validated off the event loop), list, get, delete."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Path as PathParam
from fastapi import Query, Request, Response
from fastapi.responses import FileResponse

from api.deps import DatabaseDep, IdPrefixQuery, OwnerDep, SessionDep, SettingsDep
from api.ingest import receive_upload
from api.routing import APIRouter
from api.schemas import LIST_PROBLEMS, Dataset, DatasetList, problem_responses
from api.services import datasets as service
from api.services import uploads
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.services.uploads import NAME_MAX
from api.state import app_state
from core.error_codes import CONTENT, ERROR_CODES, UPLOAD

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=problem_responses("unauthorized"))

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
    database: DatabaseDep,
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
    await database.run(
        partial(
            uploads.check_before_body, settings=settings, owner_id=principal.owner_id, content_length=declared
        )
    )
    upload = await receive_upload(request, settings.storage, settings.max_upload_bytes)
    try:
        dataset, created = await anyio.to_thread.run_sync(
            partial(uploads.ingest_and_store, database.session, settings, principal.owner_id, upload, dedupe),
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
    path, media_type = service.sample_image(session, settings.storage, principal.owner_id, dataset_id, index)
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
