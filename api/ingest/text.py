"""Text datasets: CSV (`text`, `labels` columns) and JSONL (`{"text", "labels"}` a line).

Column (and key) names come from the upload's `UploadOptions`, so a file whose labels
are in `tags` is read with `labels_column=tags`; the stored samples always use the
roles' own names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from api.ingest.columns import UNKNOWN_ROLE, UploadOptions
from api.ingest.failures import invalid
from api.ingest.labels import clean_labels, clean_unknown, with_unknown
from api.ingest.limits import IngestLimits
from api.ingest.lines import Source, at, numbered_lines, open_source, read_csv_records

TextSample = dict[str, Any]


def read_text_csv(
    source: Source, limits: IngestLimits, options: UploadOptions = UploadOptions()
) -> Iterator[tuple[str, TextSample]]:
    """Yield (where, normalized sample) for each CSV record."""
    columns, optional = options.required_columns("text"), options.optional_columns("text")
    with open_source(source) as stream:
        for line, record in read_csv_records(stream, "", columns, limits, optional, options.delimiter):
            where = at("", line)
            text = _checked_text(record["text"], where, limits)
            labels = options.split_labels(record["labels"], where, limits)
            unknown = options.split_unknown(record.get(UNKNOWN_ROLE), labels, where, limits)
            yield where, with_unknown({"text": text, "labels": labels}, unknown)


def read_text_jsonl(
    source: Source, limits: IngestLimits, options: UploadOptions = UploadOptions()
) -> Iterator[tuple[str, TextSample]]:
    """Yield (where, normalized sample) for each non-blank JSONL line."""
    with open_source(source) as stream:
        for line, raw in numbered_lines(stream, "", limits):
            if not raw.strip():
                continue
            where = at("", line)
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise invalid(
                    "invalid_json", f"{where} is not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            yield where, _sample_from_object(obj, where, limits, options)


def _sample_from_object(obj: object, where: str, limits: IngestLimits, options: UploadOptions) -> TextSample:
    text_key, labels_key = options.column("text"), options.column("labels")
    if not isinstance(obj, dict):
        raise invalid(
            "invalid_json",
            f'{where}: expected an object like {{"{text_key}": "...", "{labels_key}": ["a"]}}, '
            f"found {_json_type(obj)}",
        )
    if text_key not in obj:
        raise invalid(
            "invalid_json", f"{where}: the object has no {text_key!r} field{_key_hint('text', obj)}"
        )
    text = obj[text_key]
    if not isinstance(text, str):
        raise invalid("invalid_json", f"{where}: {text_key!r} must be a string, found {_json_type(text)}")
    if labels_key not in obj:
        raise invalid(
            "invalid_json",
            f"{where}: the object has no {labels_key!r} field (use [] for no label)"
            + _key_hint("labels", obj),
        )
    labels = obj[labels_key]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise invalid(
            "invalid_json", f"{where}: {labels_key!r} must be a list of strings, found {_json_type(labels)}"
        )
    cleaned = clean_labels(labels, where, limits)
    unknown = obj.get(UNKNOWN_ROLE, [])
    if not isinstance(unknown, list) or not all(isinstance(name, str) for name in unknown):
        raise invalid(
            "invalid_json",
            f"{where}: {UNKNOWN_ROLE!r} must be a list of strings, found {_json_type(unknown)}",
        )
    sample = {"text": _checked_text(text, where, limits), "labels": cleaned}
    return with_unknown(sample, clean_unknown(unknown, cleaned, where, limits))


def _key_hint(role: str, obj: dict[str, object]) -> str:
    keys = ", ".join(repr(key)[:40] for key in list(obj)[:8]) or "none"
    return f"; its keys are {keys}: send the form field '{role}_column' to name another"


def _checked_text(text: str, where: str, limits: IngestLimits) -> str:
    stripped = text.strip()
    if not stripped:
        raise invalid("empty_text", f"{where}: the text is empty")
    if len(stripped) > limits.max_text_chars:
        raise invalid(
            "text_too_long",
            f"{where}: the text has {len(stripped)} characters; at most {limits.max_text_chars}",
        )
    return stripped


def _json_type(value: object) -> str:
    if isinstance(value, list):
        inner = {_json_type(item) for item in value if not isinstance(item, str)}
        return f"a list holding {', '.join(sorted(inner))}" if inner else "a list"
    names = {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
