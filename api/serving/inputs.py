"""Reading and checking a predict request: JSON or multipart, limits, modality, images.

Every problem a client can cause is an `AppError` with its own code, raised before
anything reaches the model, so a bad request never takes part in a batch:

| code | status | when |
|---|---|---|
| request_too_large | 413 | the body exceeds `predict_max_body_bytes` |
| unsupported_media_type | 415 | neither application/json nor multipart/form-data |
| invalid_multipart | 400 | a multipart body that cannot be parsed |
| validation_error | 422 | the body does not match PredictRequest (incl. bad threshold / top_k / min_labels) |
| empty_inputs | 422 | no inputs |
| too_many_inputs | 422 | more than `predict_max_inputs` |
| wrong_modality | 422 | texts for an image model, images for a text model, or a mix |
| text_too_long | 422 | a text longer than `predict_max_text_chars` |
| invalid_image | 422 | bad base64, or bytes that are not a decodable PNG/JPEG/WebP/GIF/BMP |
| image_too_large | 413 | an encoded image larger than `predict_max_image_bytes` |
| image_too_many_pixels | 422 | width x height above `predict_max_image_pixels` |
| unknown_label | 422 | a `threshold` object names a label the model does not have |
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from api.serving.schemas import ImageInput, PredictRequest
from api.validation_messages import validation_problem
from apl.formats import PREDICT_IMAGE_FORMATS
from core.errors import AppError
from core.settings import Settings

if TYPE_CHECKING:
    from PIL.Image import Image

MULTIPART_FILES_FIELD = "files"
_MULTIPART_OPTIONS = ("threshold", "top_k", "min_labels")


@dataclass(frozen=True)
class Limits:
    max_inputs: int
    max_text_chars: int
    max_image_bytes: int
    max_image_pixels: int
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_inputs=settings.predict_max_inputs,
            max_text_chars=settings.predict_max_text_chars,
            max_image_bytes=settings.predict_max_image_bytes,
            max_image_pixels=settings.predict_max_image_pixels,
            max_body_bytes=settings.predict_max_body_bytes,
        )


@dataclass
class ParsedPredict:
    """A checked request: texts (str) or encoded images (bytes), plus the options."""

    kind: Literal["text", "image"]
    items: list[Any]
    threshold: float | dict[str, float] | None
    top_k: int | None
    #: None: the model's own min_labels.
    min_labels: int | None = None


def _problem(status: int, code: str, detail: str, loc: list[str | int] | None = None) -> AppError:
    errors = [{"loc": loc, "msg": detail}] if loc is not None else None
    return AppError(status, code, detail, errors=errors)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> AppError:
    return AppError(413, "request_too_large", f"the request body is larger than {limit} bytes")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ---- JSON ---------------------------------------------------------------------------------


def parse_json(body: bytes, modality: str, limits: Limits) -> ParsedPredict:
    """Validate a JSON PredictRequest against the schema, the limits and the model's modality."""
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_problem(exc.errors(), [PredictRequest], ("body",)) from None
    inputs = request.inputs
    _check_count(len(inputs), limits)
    texts = [item for item in inputs if isinstance(item, str)]
    if modality == "text":
        if len(texts) != len(inputs):
            raise _problem(
                422,
                "wrong_modality",
                'this is a text model: "inputs" must be a list of strings',
                ["body", "inputs", next(i for i, item in enumerate(inputs) if not isinstance(item, str))],
            )
        for index, text in enumerate(texts):
            if len(text) > limits.max_text_chars:
                raise _problem(
                    422,
                    "text_too_long",
                    f"input {index} has {len(text)} characters; at most {limits.max_text_chars} are allowed",
                    ["body", "inputs", index],
                )
        return ParsedPredict("text", texts, request.threshold, request.top_k, request.min_labels)
    if texts:
        raise _problem(
            422,
            "wrong_modality",
            'this is an image model: send "inputs": [{"image_base64": "..."}] or multipart files under '
            '"files"',
            ["body", "inputs", next(i for i, item in enumerate(inputs) if isinstance(item, str))],
        )
    images = [
        _decode_base64(item, index, limits)
        for index, item in enumerate(inputs)
        if isinstance(item, ImageInput)
    ]
    return ParsedPredict("image", images, request.threshold, request.top_k, request.min_labels)


def _check_count(count: int, limits: Limits) -> None:
    if count == 0:
        raise _problem(
            422, "empty_inputs", "the request has no inputs; send at least one", ["body", "inputs"]
        )
    if count > limits.max_inputs:
        raise _problem(
            422,
            "too_many_inputs",
            f"the request has {count} inputs; at most {limits.max_inputs} are allowed per request",
            ["body", "inputs"],
        )


def _decode_base64(item: ImageInput, index: int, limits: Limits) -> bytes:
    text = item.image_base64.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    loc: list[str | int] = ["body", "inputs", index, "image_base64"]
    if len(text) * 3 // 4 > limits.max_image_bytes + 3:
        raise _image_too_large(index, limits, loc)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _problem(
            422, "invalid_image", f"input {index}: image_base64 is not valid base64", loc
        ) from None
    if len(data) > limits.max_image_bytes:
        raise _image_too_large(index, limits, loc)
    if not data:
        raise _problem(422, "invalid_image", f"input {index}: the image is empty", loc)
    return data


def _image_too_large(index: int, limits: Limits, loc: list[str | int]) -> AppError:
    return _problem(
        413, "image_too_large", f"input {index}: the image is larger than {limits.max_image_bytes} bytes", loc
    )


# ---- multipart ----------------------------------------------------------------------------


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _chunks(upload: UploadFile, limit: int) -> AsyncIterator[bytes]:
    size = 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise ValueError("too large")
        yield chunk


async def parse_multipart(request: Request, body: bytes, modality: str, limits: Limits) -> ParsedPredict:
    """Images under `files` (one part per image), `threshold`, `top_k` and `min_labels` as form fields."""
    replayed = Request(request.scope, _replay(body))
    try:
        form = await replayed.form(max_files=limits.max_inputs + 1, max_fields=16, max_part_size=64 * 1024)
    except HTTPException as exc:
        detail = str(exc.detail)
        if detail.lower().startswith("too many files"):
            raise _problem(
                422,
                "too_many_inputs",
                f"the request has more than {limits.max_inputs} files, the most one request may hold",
                ["body", MULTIPART_FILES_FIELD],
            ) from None
        raise AppError(400, "invalid_multipart", f"the multipart body cannot be parsed: {detail}") from None
    try:
        unexpected = [key for key in form if key not in (MULTIPART_FILES_FIELD, *_MULTIPART_OPTIONS)]
        if unexpected:
            raise _problem(
                422,
                "validation_error",
                f"unexpected form field '{unexpected[0]}'; send images under '{MULTIPART_FILES_FIELD}'",
                ["body", unexpected[0]],
            )
        parts = form.getlist(MULTIPART_FILES_FIELD)
        options = _multipart_options(form.get("threshold"), form.get("top_k"), form.get("min_labels"))
        if modality == "text":
            raise _problem(
                422,
                "wrong_modality",
                'this is a text model: send JSON {"inputs": ["text", ...]}, not files',
                ["body", MULTIPART_FILES_FIELD],
            )
        _check_count(len(parts), limits)
        images: list[bytes] = []
        for index, part in enumerate(parts):
            loc: list[str | int] = ["body", MULTIPART_FILES_FIELD, index]
            if not isinstance(part, UploadFile):
                raise _problem(
                    422, "invalid_image", f"file {index}: '{MULTIPART_FILES_FIELD}' must be a file", loc
                )
            if part.size is not None and part.size > limits.max_image_bytes:
                raise _image_too_large(index, limits, loc)
            try:
                data = b"".join([chunk async for chunk in _chunks(part, limits.max_image_bytes)])
            except ValueError:
                raise _image_too_large(index, limits, loc) from None
            if not data:
                raise _problem(422, "invalid_image", f"file {index}: the image is empty", loc)
            images.append(data)
    finally:
        await form.close()
    return ParsedPredict("image", images, options.threshold, options.top_k, options.min_labels)


def _multipart_options(threshold: Any, top_k: Any, min_labels: Any = None) -> PredictRequest:
    raw: dict[str, Any] = {"inputs": []}
    if isinstance(threshold, str) and threshold.strip():
        value = threshold.strip()
        if value.startswith("{"):
            try:
                raw["threshold"] = json.loads(value)
            except ValueError:
                raise _problem(
                    422, "validation_error", "threshold: not a number or a JSON object", ["body", "threshold"]
                ) from None
        else:
            raw["threshold"] = value
    if isinstance(top_k, str) and top_k.strip():
        raw["top_k"] = top_k.strip()
    if isinstance(min_labels, str) and min_labels.strip():
        raw["min_labels"] = min_labels.strip()
    try:
        return PredictRequest.model_validate(raw)
    except ValidationError as exc:
        raise validation_problem(exc.errors(), [PredictRequest], ("body",)) from None


# ---- images -------------------------------------------------------------------------------


def decode_images(images: list[bytes], limits: Limits, where: str = "input") -> list[Image]:
    """Decode to RGB with the pixel limit checked from the header, before any pixel is decoded."""
    return [decode_image(data, index, limits, where) for index, data in enumerate(images)]


def decode_image(data: bytes, index: int, limits: Limits, where: str = "input") -> Image:
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as image:
            if image.format not in PREDICT_IMAGE_FORMATS:
                raise _problem(
                    422,
                    "invalid_image",
                    f"{where} {index}: images must be PNG, JPEG, WebP, GIF or BMP (got {image.format})",
                )
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise _problem(
                    422,
                    "image_too_many_pixels",
                    f"{where} {index}: the image has {width}x{height} pixels; "
                    f"at most {limits.max_image_pixels} pixels are allowed",
                )
            return image.convert("RGB")
    except PILImage.DecompressionBombError:
        raise _problem(
            422, "image_too_many_pixels", f"{where} {index}: the image has too many pixels"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise _problem(422, "invalid_image", f"{where} {index}: the image cannot be decoded") from None
