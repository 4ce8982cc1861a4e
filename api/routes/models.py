"""/v1/models: the model registry, artifact downloads (tar or ONNX) and predictions.

Predictions go through the app's serving engine (api/serving, via api/services/predictions):
the model is loaded on first use, kept in an LRU cache, and concurrent requests for one
model are merged into micro-batches by the model's inference thread. The route itself
only reads and checks the request body.
"""

from __future__ import annotations

import base64
import copy
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import DatabaseDep, IdPrefixQuery, OwnerDep, SessionDep, SettingsDep
from api.routing import APIRouter
from api.schemas import LIST_PROBLEMS, problem_responses
from api.services import models as service
from api.services import predictions
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.services.predictions import OwnedModel
from api.serving.engine import ServingEngine
from api.serving.inputs import (
    MULTIPART_FILES_FIELD,
    Limits,
    media_type,
    parse_json,
    parse_multipart,
    read_body,
)
from api.serving.schemas import (
    Evaluation,
    LabelIssueList,
    Model,
    ModelList,
    ModelUpdate,
    PredictRequest,
    PredictResponse,
)
from api.serving.state import engine_of, get_engine, lookup_cache, serving_lifespan
from core.errors import AppError
from core.settings import Settings

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    responses=problem_responses("unauthorized"),
    lifespan=serving_lifespan,
)

PREDICT_PROBLEMS = (
    "not_found",
    "validation_error",
    "unsupported_media_type",
    "invalid_multipart",
    "request_too_large",
    (413, "image_too_large"),
    "empty_inputs",
    "too_many_inputs",
    "text_too_long",
    "invalid_image",
    "image_too_many_pixels",
    "wrong_modality",
    "unknown_label",
    "model_unavailable",
)

#: JSON bodies up to this size are validated on the event loop (cheaper than a thread hop);
#: larger ones (base64 images) in the thread pool.
INLINE_PARSE_BYTES = 32 * 1024


def _inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` inlined (an OpenAPI body schema has no `$defs` root)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_schema(PredictRequest.model_json_schema())},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [MULTIPART_FILES_FIELD],
                    "properties": {
                        MULTIPART_FILES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Image models only: one image file per part, predicted in order.",
                        },
                        "threshold": {
                            "type": "string",
                            "description": 'A number, or a JSON object {"label": threshold}.',
                        },
                        "top_k": {"type": "integer", "minimum": 1},
                        "min_labels": {"type": "integer", "minimum": 0},
                    },
                }
            },
        },
    }
}


async def owned_model(
    model_id: str, request: Request, principal: OwnerDep, settings: SettingsDep, database: DatabaseDep
) -> OwnedModel:
    """The caller's model as the serving engine needs it; briefly cached (rows never change)."""
    cache = lookup_cache(request.app)
    found = cache.get((principal.owner_id, model_id))
    if isinstance(found, OwnedModel) and found.ref.path.is_file():
        return found
    fresh = await database.run(
        partial(predictions.owned_model, settings=settings, owner_id=principal.owner_id, model_id=model_id)
    )
    cache.put((principal.owner_id, model_id), fresh)
    return fresh


OwnedModelDep = Annotated[OwnedModel, Depends(owned_model)]
EngineDep = Annotated[ServingEngine, Depends(get_engine)]


@router.get("", response_model=ModelList, responses=problem_responses(*LIST_PROBLEMS))
def list_models(
    principal: OwnerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    id_prefix: IdPrefixQuery = None,
    dataset_id: Annotated[str | None, Query(description="Only models trained on this dataset.")] = None,
    sweep_id: Annotated[str | None, Query(description="Only models made by this sweep's jobs.")] = None,
) -> ModelList:
    """The caller's models, newest first, each with its name, dataset, loss, sweep and role."""
    return service.list_page(
        session,
        principal.owner_id,
        limit=limit,
        cursor=cursor,
        id_prefix=id_prefix,
        dataset_id=dataset_id,
        sweep_id=sweep_id,
    )


@router.get("/{model_id}", response_model=Model, responses=problem_responses("not_found"))
def get_model(model_id: str, principal: OwnerDep, session: SessionDep) -> Model:
    """A model: labels, tuned thresholds (and which labels fell back to the global one), metrics,
    the artifact's digest and size, and the job, dataset, loss and base model it came from."""
    return service.document_owned(session, principal.owner_id, model_id)


@router.patch(
    "/{model_id}", response_model=Model, responses=problem_responses("not_found", "validation_error")
)
def rename_model(model_id: str, body: ModelUpdate, principal: OwnerDep, session: SessionDep) -> Model:
    """Name the model (`{"name": "..."}`, 1 to 128 printable characters), shown in every list;
    `{"name": null}` removes the name, and the model shows its job's name again."""
    return service.rename(session, principal.owner_id, model_id, body.name)


@router.get(
    "/{model_id}/evaluation",
    response_model=Evaluation,
    responses=problem_responses("not_found", "evaluation_unavailable"),
)
def get_evaluation(model_id: str, principal: OwnerDep, session: SessionDep) -> Evaluation:
    """How the model did on its validation split, computed once when it was published.

    Per label: support, AP, the threshold and where it came from (set by the job's
    decision policy, or the fallback for labels with too few positives), precision,
    recall and F1 at it, its temperature and a PR curve of at most 101 points. Overall: mAP,
    micro and macro F1 at the thresholds, mAP over the most and least frequent thirds of the
    labels, and the calibration (ECE before and after, 15 equal-width bins over all label
    cells, with the reliability bins). 404 `evaluation_unavailable` for a model published
    before evaluations were stored.
    """
    return service.evaluation(service.get_owned(session, principal.owner_id, model_id))


@router.get(
    "/{model_id}/label-issues",
    response_model=LabelIssueList,
    responses=problem_responses("not_found", "label_issues_unavailable", "invalid_cursor"),
)
def get_label_issues(
    model_id: str,
    principal: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> LabelIssueList:
    """Suspect labels: the model's validation samples ranked by label quality, most suspect first.

    Computed once when the model was published, with cleanlab's multi-label label-issue detection
    on the validation split's out-of-sample probabilities. Only validation samples are checked:
    the model was fit on its training samples, so their probabilities say what it was taught,
    not whether the labels are right. Each item has the given labels, the labels the model
    disagrees on, cleanlab's score and flag, and the text or the image's path.
    """
    row = service.get_owned(session, principal.owner_id, model_id)
    return service.label_issues(settings, row, limit=limit, cursor=cursor)


@router.delete(
    "/{model_id}", status_code=204, response_class=Response, responses=problem_responses("not_found")
)
def delete_model(
    model_id: str, request: Request, principal: OwnerDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete a model and its files; it is unloaded from this server at once.

    The job that trained it keeps its history (its `model_id` becomes null).
    """
    service.delete(session, settings, principal.owner_id, model_id)
    lookup_cache(request.app).discard((principal.owner_id, model_id))
    engine_of(request.app).evict(model_id)
    return Response(status_code=204)


def _digest_headers(sha256_hex: str) -> dict[str, str]:
    b64 = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    return {
        "ETag": f'"{sha256_hex}"',
        "Repr-Digest": f"sha-256=:{b64}:",
        "Digest": f"sha-256={b64}",
        "Cache-Control": "private, max-age=0, must-revalidate",
    }


@router.get(
    "/{model_id}/artifact",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/x-tar": {}, "application/zip": {}},
            "description": "`format=tar` (default): the model artifact, a tar of config.json (architecture, "
            "base model, preprocessing, labels, thresholds), model.safetensors and, for text models, "
            "encoder/ and tokenizer/; load it with `apl.inference.load(path)`. `format=onnx`: a zip of "
            "model.onnx (inputs to sigmoid probabilities; labels and thresholds also in its metadata_props), "
            "config.json and, for text models, tokenizer/. The SHA-256 is in `ETag` and `Repr-Digest`.",
        },
        304: {"description": "If-None-Match matched the ETag."},
        **problem_responses("not_found", "validation_error", "model_unavailable", "onnx_export_failed"),
    },
)
def download_artifact(
    model_id: str,
    request: Request,
    principal: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[
        service.ArtifactFormat, Query(description="tar: safetensors + JSON; onnx: ONNX zip")
    ] = "tar",
) -> Response:
    """Download the trained model (the ONNX export is made on the first request, then cached)."""
    download = service.download_owned(session, settings, principal.owner_id, model_id, format)
    headers = _digest_headers(download.sha256)
    if request.headers.get("if-none-match", "").strip() == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return FileResponse(
        download.path, media_type=download.media_type, filename=download.filename, headers=headers
    )


async def _parse(request: Request, target: OwnedModel, settings: Settings) -> Any:
    limits = Limits.from_settings(settings)
    body = await read_body(request, limits.max_body_bytes)
    kind = media_type(request)
    modality = target.ref.modality
    if kind == "application/json" or kind.endswith("+json"):
        if len(body) <= INLINE_PARSE_BYTES:
            return parse_json(body, modality, limits)
        return await run_in_threadpool(parse_json, body, modality, limits)
    if kind == "multipart/form-data":
        return await parse_multipart(request, body, modality, limits)
    raise AppError(
        415, "unsupported_media_type", "send application/json, or multipart/form-data with image files"
    )


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    openapi_extra=_PREDICT_BODY,
    responses=problem_responses(*PREDICT_PROBLEMS),
)
async def predict(
    request: Request, target: OwnedModelDep, settings: SettingsDep, engine: EngineDep
) -> PredictResponse:
    """Predict labels for texts (JSON) or images (JSON base64 or multipart `files`).

    Every prediction has the calibrated probability of every label (`scores`) and the
    labels of the decision rule (`labels`, highest score first): those at or above their
    threshold, then `top_k` keeps at most the k best of them, then `min_labels` (default:
    the model's) adds the best-scoring others until that many are returned; those are
    also listed in `added_by_min_labels`. `threshold` overrides the model's thresholds,
    as one number or per label. Results are in input order. Concurrent requests for one
    model are answered from shared micro-batches.
    """
    arrival = engine.arrive(target.ref.id)  # counted before the body is read: a forming batch waits
    try:
        parsed = await _parse(request, target, settings)
        return await predictions.predict(engine, target, parsed, arrival, Limits.from_settings(settings))
    finally:
        arrival.leave()
