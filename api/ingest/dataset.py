"""Turn one uploaded file into the normalized stored dataset, or into a precise 4xx.

The stored form (read by training): `<dataset_dir>/samples.jsonl` with one
`{"text", "labels"}` or `{"image": "images/<member>", "labels"}` object a line (plus
`"unknown": [...]` on a partially annotated sample, names of the dataset's labels only),
`<dataset_dir>/labels.json` (sorted label names) and, for images, the files
under `<dataset_dir>/images/`. Everything is written into a hidden sibling staging
directory that is renamed into place only when the whole dataset is valid, so a
failure at any point leaves nothing behind and readers never see half a dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from api.ingest.columns import UploadOptions
from api.ingest.failures import invalid, quote, unsupported_format
from api.ingest.images import extract_image, inspect_zip, read_labels_file, tally_entries
from api.ingest.labels import LabelTally, with_unknown
from api.ingest.limits import IngestLimits
from api.ingest.lines import Source, open_source
from api.ingest.text import read_text_csv, read_text_jsonl
from apl.formats import IMAGES_DIR, LABELS_FILE, SAMPLES_FILE, UNKNOWN_KEY

DatasetFormat = Literal["csv", "jsonl", "zip"]
Modality = Literal["text", "image"]

FORMATS_BY_SUFFIX: dict[str, DatasetFormat] = {".csv": "csv", ".jsonl": "jsonl", ".zip": "zip"}


@dataclass(frozen=True)
class IngestResult:
    """The statistics a Dataset row and response carry; computed during the single parse."""

    modality: Modality
    format: DatasetFormat
    num_samples: int
    labels: list[str]
    label_counts: dict[str, int]
    label_cardinality: float
    warnings: list[str]
    #: Label cells marked unknown (partial annotation), in all and per label.
    unknown_cells: int = 0
    unknown_counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_format(filename: str) -> DatasetFormat:
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        raise unsupported_format(
            f"{quote(filename)} is not a supported dataset file; upload a .csv or .jsonl text dataset "
            "or a .zip of images with labels.csv"
        )
    return FORMATS_BY_SUFFIX[suffix]


def ingest_dataset(
    upload: Source,
    filename: str,
    dataset_dir: Path,
    limits: IngestLimits = IngestLimits(),
    options: UploadOptions = UploadOptions(),
) -> IngestResult:
    """Validate and normalize an upload into dataset_dir (created here; must not hold anything).

    `options` says which columns hold what and how labels are separated. Raises
    AppError (415 unsupported_format, 422 for content problems) with nothing left
    behind. The upload (a local file, or the body received into storage) belongs to the caller
    and is not touched.
    """
    fmt = detect_format(filename)
    options.check_applies_to("image" if fmt == "zip" else "text")
    if dataset_dir.exists():
        if any(dataset_dir.iterdir()):
            raise FileExistsError(f"{dataset_dir} already holds files; each dataset needs a new directory")
        dataset_dir.rmdir()  # an empty placeholder is replaced by the staged dataset
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = dataset_dir.parent / f".{dataset_dir.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        if fmt == "zip":
            tally = _ingest_zip(upload, staging, limits, options)
        else:
            reader = read_text_csv if fmt == "csv" else read_text_jsonl
            # Closed here, not by the garbage collector: a failed write (a full disk) must not
            # leave the upload open through a suspended generator (issue 14).
            with contextlib.closing(reader(upload, limits, options)) as samples:
                tally = _write_samples(samples, staging / SAMPLES_FILE, limits)
            tally.check(limits)
            _drop_stray_unknown(staging / SAMPLES_FILE, set(tally.stray_unknown))
        _write_json(staging / LABELS_FILE, tally.labels)
        os.rename(staging, dataset_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return IngestResult(
        modality="image" if fmt == "zip" else "text",
        format=fmt,
        num_samples=tally.num_samples,
        labels=tally.labels,
        label_counts=tally.label_counts,
        label_cardinality=round(tally.cardinality, 6),
        warnings=tally.warnings(limits),
        unknown_cells=tally.unknown_cells,
        unknown_counts=tally.unknown_counts if tally.unknown_cells else {},
    )


def _write_samples(
    samples: Iterable[tuple[str, dict[str, Any]]], path: Path, limits: IngestLimits
) -> LabelTally:
    tally = LabelTally()
    with path.open("w", encoding="utf-8") as out:
        for where, sample in samples:
            tally.add(sample["labels"], where, limits, sample.get(UNKNOWN_KEY, ()))
            out.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return tally


def _drop_stray_unknown(path: Path, stray: set[str]) -> None:
    """Rewrite the samples without unknown names that are no label of the dataset (a warning says so).

    The stored form names only the dataset's labels, which are known only once every sample
    has streamed past; this second pass runs only for the uploads that need it.
    """
    if not stray:
        return
    rewritten = path.with_name(f".{path.name}.rewrite")
    with path.open(encoding="utf-8") as source, rewritten.open("w", encoding="utf-8") as out:
        for line in source:
            sample = json.loads(line)
            kept = [name for name in sample.pop(UNKNOWN_KEY, []) if name not in stray]
            out.write(json.dumps(with_unknown(sample, kept), ensure_ascii=False) + "\n")
    os.replace(rewritten, path)


def _ingest_zip(upload: Source, staging: Path, limits: IngestLimits, options: UploadOptions) -> LabelTally:
    """Random access (the central directory is at the end): on S3 each refill of the read-ahead
    buffer is one ranged GET, so the images are extracted in archive order (one forward pass
    over the bytes), and the samples written in labels.csv order after."""
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open_source(upload))
        try:
            archive = stack.enter_context(zipfile.ZipFile(stream))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise invalid("invalid_zip", "the file is not a readable ZIP archive") from None
        files = inspect_zip(archive, limits)
        entries = read_labels_file(archive, files, limits, options)
        tally = tally_entries(entries, limits)
        images_root = staging / IMAGES_DIR
        images_root.mkdir()
        for entry in sorted(entries, key=lambda entry: files[entry.member].header_offset):
            extract_image(archive, files[entry.member], images_root, limits)
        with (staging / SAMPLES_FILE).open("w", encoding="utf-8") as out:
            stray = set(tally.stray_unknown)
            for entry in entries:
                unknown = [name for name in entry.unknown if name not in stray]
                sample = with_unknown({"image": entry.stored_path, "labels": entry.labels}, unknown)
                out.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return tally


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False) + "\n", encoding="utf-8")
