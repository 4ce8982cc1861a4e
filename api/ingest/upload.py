"""Receive a multipart/form-data upload by streaming it into storage as it arrives.

The body goes chunk by chunk from `request.stream()` through python-multipart's
streaming parser straight into the storage's upload body (core.objects: a file under
the data dir's uploads/, or the parts of an S3 multipart upload, at most one part in
memory), hashed on the way, so memory stays flat whatever the upload size and an
oversize upload is cut off as soon as it crosses the limit (or before a byte is read,
when Content-Length already says so).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartState, parse_options_header
from starlette.requests import Request

from core.errors import AppError
from core.objects import Storage, UploadBody

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
MAX_FILENAME_CHARS = 255
FALLBACK_FILENAME = "upload"
# Room for part headers, boundaries and the small text fields on top of the file itself.
FORM_OVERHEAD_BYTES = MAX_FIELDS * (MAX_FIELD_BYTES + 1024) + 64 * 1024


@dataclass(frozen=True)
class ReceivedUpload:
    """The uploaded file in storage (owned by the caller from now on: it `discard`s the body once
    ingested) and the form's text fields."""

    body: UploadBody
    filename: str
    fields: dict[str, str]
    size_bytes: int
    sha256: str


def too_large(max_bytes: int) -> AppError:
    return AppError(413, "upload_too_large", f"the upload is larger than the limit of {_human(max_bytes)}")


def _bad_form(code: str, detail: str) -> AppError:
    return AppError(400, code, detail)


async def receive_upload(request: Request, storage: Storage, max_bytes: int) -> ReceivedUpload:
    """Stream the form's `file` part into a new upload body of `storage`; text parts come back as fields.

    On any failure, including a client that disconnects, the partial upload is discarded.
    """
    boundary = _boundary(request.headers.get("content-type"))
    max_body = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _bad_form("invalid_content_length", "the Content-Length header is not a number")
        if int(declared) > max_body:
            raise too_large(max_bytes)
    form = _FormSink(storage, max_bytes)
    try:
        try:
            parser = MultipartParser(boundary, form.callbacks())
        except ValueError:
            raise _bad_form("invalid_multipart", "the multipart boundary is invalid") from None
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise too_large(max_bytes)
            try:
                parser.write(chunk)
            except MultipartParseError:
                raise _bad_form("invalid_multipart", "the multipart/form-data body is malformed") from None
            if form.body is not None and form.body.ready():  # a full part: send it off the event loop
                await anyio.to_thread.run_sync(form.body.flush)
        if parser.state != MultipartState.END:
            raise _bad_form(
                "invalid_multipart", "the multipart/form-data body ended before its final boundary"
            )
        upload = form.result()
        await anyio.to_thread.run_sync(upload.body.finish)
        return upload
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(form.discard)
        raise


def _boundary(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise AppError(
            415,
            "unsupported_media_type",
            "upload the dataset as multipart/form-data with the file in the 'file' field",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise _bad_form("invalid_multipart", "the multipart/form-data content type has no boundary")
    return boundary


def sanitize_filename(raw: str) -> str:
    """Keep only a printable base name: clients send paths, control characters and worse."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in ("", ".", ".."):
        return FALLBACK_FILENAME
    if len(name) > MAX_FILENAME_CHARS:
        _, dot, suffix = name.rpartition(".")
        keep = f"{dot}{suffix}" if dot and len(suffix) <= 16 else ""
        name = name[: MAX_FILENAME_CHARS - len(keep)] + keep
    return name


@dataclass
class _Part:
    name: str
    filename: str | None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class _FormSink:
    """Callbacks for MultipartParser: the file part goes to the storage's upload body, other parts
    to small buffers."""

    def __init__(self, storage: Storage, max_bytes: int) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.headers: dict[str, bytes] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.part: _Part | None = None
        self.body: UploadBody | None = None
        self.file_ended = False
        self.filename: str | None = None
        self.size = 0
        self.hash = hashlib.sha256()
        self.parts = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_FIELDS:
            raise _bad_form("too_many_fields", f"the form has more than {MAX_FIELDS} parts")
        self.headers = {}
        self.part = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").strip().lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = params.get(b"filename")
        filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        self.part = _Part(name=name, filename=filename)
        if name == FILE_FIELD:
            if self.body is not None:
                raise _bad_form("too_many_files", f"the form has more than one '{FILE_FIELD}' part")
            self._open_file(filename or "")
        elif filename is not None:
            raise _bad_form(
                "unexpected_file",
                f"only one file is accepted, in the '{FILE_FIELD}' field; found one in {name!r}",
            )

    def _open_file(self, filename: str) -> None:
        self.filename = sanitize_filename(filename)
        self.body = self.storage.receive()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        assert part is not None
        if part.name == FILE_FIELD and self.body is not None:
            view = memoryview(data)[start:end]
            self.size += len(view)
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
            self.hash.update(view)
            self.body.write(view)
            return
        part.size += end - start
        if part.size > MAX_FIELD_BYTES:
            raise _bad_form(
                "field_too_large", f"form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes"
            )
        part.chunks.append(data[start:end])

    def on_part_end(self) -> None:
        part = self.part
        if part is None:
            return
        if part.name == FILE_FIELD and self.body is not None:
            self.file_ended = True  # made whole (fsync, or the multipart upload completed) by the caller
            return
        try:
            self.fields[part.name] = b"".join(part.chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_form("invalid_field", f"form field {part.name!r} is not valid UTF-8") from None

    def result(self) -> ReceivedUpload:
        if self.body is None or self.filename is None or not self.file_ended:
            raise AppError(
                422, "missing_file", f"the form has no '{FILE_FIELD}' part holding the dataset file"
            )
        return ReceivedUpload(
            body=self.body,
            filename=self.filename,
            fields=self.fields,
            size_bytes=self.size,
            sha256=self.hash.hexdigest(),
        )

    def discard(self) -> None:
        """Drop the partial upload (a local file, or an S3 multipart upload aborted)."""
        if self.body is not None:
            self.body.discard()


def _human(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    return f"{n} bytes"
