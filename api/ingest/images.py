"""Image datasets: a ZIP of PNG/JPEG/WebP files plus `labels.csv` at its root.

Order matters for safety: the central directory is checked as a whole (names,
file types, member count, sizes, compression ratios), then labels.csv is read and
cross-checked against the members, and only then are the listed images streamed
out one by one, each decoded once to prove it is a real image of bounded size.
Nothing is ever extracted with `extractall`, and no path from the archive is
trusted before it has passed `unsafe_reason`.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from api.ingest.columns import UNKNOWN_ROLE, UploadOptions
from api.ingest.failures import invalid, quote
from api.ingest.labels import LabelTally
from api.ingest.limits import MIB, IngestLimits
from api.ingest.lines import read_csv_records
from apl.formats import DATASET_IMAGE_FORMATS, DATASET_IMAGE_SUFFIXES, IMAGES_DIR

LABELS_MEMBER = "labels.csv"
SUPPORTED_COMPRESSION = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
# Metadata that macOS Finder and Windows Explorer add to archives; skipped, never extracted.
IGNORED_PREFIXES = ("__MACOSX/",)
IGNORED_BASENAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_COPY_CHUNK = 1 * MIB


@dataclass(frozen=True)
class ImageEntry:
    where: str
    member: str
    labels: list[str]
    #: Label names this image leaves unannotated (the optional `unknown` column).
    unknown: list[str] = field(default_factory=list)

    @property
    def stored_path(self) -> str:
        return f"{IMAGES_DIR}/{self.member}"


def unsafe_reason(name: str, limits: IngestLimits) -> str | None:
    """Why a member name could escape or confuse the extraction directory, or None if it is safe."""
    if not name:
        return "has an empty name"
    if len(name) > limits.max_member_name_chars:
        return f"has a name longer than {limits.max_member_name_chars} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "has control characters in its name"
    if "\\" in name:
        return "uses backslashes in its path"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "climbs out of the archive with '..'"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' path component"
    return None


def _is_ignored(name: str) -> bool:
    return name.startswith(IGNORED_PREFIXES) or PurePosixPath(name).name in IGNORED_BASENAMES


def inspect_zip(archive: zipfile.ZipFile, limits: IngestLimits) -> dict[str, zipfile.ZipInfo]:
    """Check every member's metadata; return the regular files worth looking at, by name."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise invalid("too_many_members", f"the ZIP has {len(infos)} members; at most {limits.max_members}")
    seen: set[str] = set()
    files: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        reason = unsafe_reason(name, limits) or _file_type_problem(info)
        if reason is None and name in seen:
            reason = "appears twice in the archive"
        if reason:
            raise invalid("unsafe_zip_member", f"ZIP member {quote(name)} {reason}; nothing was extracted")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise invalid("invalid_zip", f"ZIP member {quote(name)} is encrypted; upload an unencrypted ZIP")
        if info.compress_type not in SUPPORTED_COMPRESSION:
            raise invalid("invalid_zip", f"ZIP member {quote(name)} uses an unsupported compression method")
        if info.is_dir():
            continue
        total += info.file_size
        if total > limits.max_total_uncompressed:
            raise invalid(
                "zip_too_large",
                f"the ZIP expands to more than {limits.max_total_uncompressed} bytes "
                f"(limit reached at member {quote(name)})",
            )
        if info.file_size >= limits.ratio_check_min_bytes:
            ratio = info.file_size / info.compress_size if info.compress_size else float("inf")
            if ratio > limits.max_compression_ratio:
                raise invalid(
                    "zip_too_large",
                    f"ZIP member {quote(name)} expands {ratio:.0f} times "
                    f"(limit {limits.max_compression_ratio:.0f}); it looks like a ZIP bomb",
                )
        if not _is_ignored(name):
            files[name] = info
    return files


def _file_type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file"
    return None


def read_labels_file(
    archive: zipfile.ZipFile,
    files: dict[str, zipfile.ZipInfo],
    limits: IngestLimits,
    options: UploadOptions = UploadOptions(),
) -> list[ImageEntry]:
    """Parse labels.csv and prove it and the members describe the same set of images."""
    if LABELS_MEMBER not in files:
        nested = next((name for name in files if PurePosixPath(name).name == LABELS_MEMBER), None)
        hint = f"; found {quote(nested)}, zip the folder's contents rather than the folder" if nested else ""
        raise invalid("missing_labels_file", f"the ZIP has no labels.csv at its root{hint}")
    entries: list[ImageEntry] = []
    first_seen: dict[str, str] = {}
    columns, optional = options.required_columns("image"), options.optional_columns("image")
    with _reading(LABELS_MEMBER), archive.open(files[LABELS_MEMBER]) as stream:
        for line, record in read_csv_records(
            stream, LABELS_MEMBER, columns, limits, optional, options.delimiter
        ):
            where = f"{LABELS_MEMBER} line {line}"
            member = record["filename"].strip().removeprefix("./")
            if not member:
                raise invalid("invalid_csv", f"{where}: the filename is empty")
            if member in first_seen:
                raise invalid(
                    "duplicate_entry",
                    f"{where}: {quote(member)} is listed again (first on {first_seen[member]})",
                )
            if member not in files:
                raise invalid("missing_image", f"{where}: {quote(member)} is not in the ZIP")
            if PurePosixPath(member).suffix.lower() not in DATASET_IMAGE_SUFFIXES:
                raise invalid(
                    "invalid_image", f"{where}: {quote(member)} is not a .png, .jpg, .jpeg or .webp file"
                )
            first_seen[member] = f"line {line}"
            labels = options.split_labels(record["labels"], where, limits)
            unknown = options.split_unknown(record.get(UNKNOWN_ROLE), labels, where, limits)
            entries.append(ImageEntry(where, member, labels, unknown))
    unlisted = [name for name in files if name != LABELS_MEMBER and name not in first_seen]
    if unlisted:
        more = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise invalid(
            "unlisted_file",
            f"ZIP member {quote(unlisted[0])}{more} is not listed in labels.csv; list it or remove it",
        )
    return entries


def tally_entries(entries: list[ImageEntry], limits: IngestLimits) -> LabelTally:
    tally = LabelTally()
    for entry in entries:
        tally.add(entry.labels, entry.where, limits, entry.unknown)
    tally.check(limits)
    return tally


def extract_image(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, images_root: Path, limits: IngestLimits
) -> None:
    """Stream one validated member under images_root, then decode it once to prove it is an image."""
    target = images_root.joinpath(*info.filename.split("/"))
    if not target.resolve().is_relative_to(images_root.resolve()):  # unreachable after unsafe_reason
        raise invalid("unsafe_zip_member", f"ZIP member {quote(info.filename)} escapes the dataset")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _reading(info.filename), archive.open(info) as source, target.open("xb") as sink:
        written = 0
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise invalid("invalid_zip", f"ZIP member {quote(info.filename)} is larger than it declares")
            sink.write(chunk)
    check_image(target, info.filename, limits)


def check_image(path: Path, member: str, limits: IngestLimits) -> None:
    """Read the header first so a decompression bomb is refused before any pixel is decoded."""
    try:
        with Image.open(path, formats=sorted(DATASET_IMAGE_FORMATS)) as image:
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise invalid(
                    "image_too_large",
                    f"ZIP member {quote(member)} is {width}x{height} pixels; "
                    f"at most {limits.max_image_pixels} pixels are allowed",
                )
            image.load()
    except Image.DecompressionBombError:
        raise invalid(
            "image_too_large", f"ZIP member {quote(member)} has more than {limits.max_image_pixels} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise invalid(
            "invalid_image", f"ZIP member {quote(member)} is not a readable PNG, JPEG or WebP image"
        ) from None


@contextmanager
def _reading(member: str) -> Iterator[None]:
    """Turn a corrupt member's low-level errors into an invalid_zip that names the member."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError):
        raise invalid("invalid_zip", f"ZIP member {quote(member)} is corrupt") from None
