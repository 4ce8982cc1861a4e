"""A multipart/form-data body streamed from disk, with a known length and progress reports.

httpx would read a file object for us, but building the body as a generator lets us
report every chunk as it goes out and send an exact Content-Length, so the server
can refuse an upload over its size limit before reading it.
"""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 256 * 1024
CONTENT_TYPES = {".csv": "text/csv", ".jsonl": "application/x-ndjson", ".zip": "application/zip"}

#: Called with (bytes of the file sent so far, file size).
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class MultipartBody:
    content_type: str
    length: int
    chunks: Iterator[bytes]


def _quote(value: str) -> str:
    """A header parameter value: quotes and line breaks escaped as browsers do."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def multipart_file(
    path: Path,
    fields: dict[str, str],
    *,
    file_field: str = "file",
    progress: ProgressCallback | None = None,
) -> MultipartBody:
    boundary = uuid.uuid4().hex
    size = path.stat().st_size
    content_type = CONTENT_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode()
        + value.encode("utf-8")
        + b"\r\n"
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(file_field)}"; '
        f'filename="{_quote(path.name)}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        sent = 0
        if progress is not None:
            progress(0, size)
        with path.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)
        if sent != size:
            raise OSError(f"{path} changed size while it was being uploaded")
        yield tail

    return MultipartBody(f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), chunks())
