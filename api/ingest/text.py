"""Text datasets: CSV (`text`, `labels` columns) and JSONL (`{"text", "labels"}` a line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api.ingest.failures import invalid
from api.ingest.labels import clean_labels, split_label_list
from api.ingest.limits import IngestLimits
from api.ingest.lines import at, numbered_lines, read_csv_records

TextSample = dict[str, Any]


def read_text_csv(path: Path, limits: IngestLimits) -> Iterator[tuple[str, TextSample]]:
    """Yield (where, normalized sample) for each CSV record."""
    with path.open("rb") as stream:
        for line, record in read_csv_records(stream, "", ("text", "labels"), limits):
            where = at("", line)
            text = _checked_text(record["text"], where, limits)
            yield where, {"text": text, "labels": split_label_list(record["labels"], where, limits)}


def read_text_jsonl(path: Path, limits: IngestLimits) -> Iterator[tuple[str, TextSample]]:
    """Yield (where, normalized sample) for each non-blank JSONL line."""
    with path.open("rb") as stream:
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
            yield where, _sample_from_object(obj, where, limits)


def _sample_from_object(obj: object, where: str, limits: IngestLimits) -> TextSample:
    if not isinstance(obj, dict):
        raise invalid(
            "invalid_json",
            f'{where}: expected an object like {{"text": "...", "labels": ["a"]}}, found {_json_type(obj)}',
        )
    if "text" not in obj:
        raise invalid("invalid_json", f"{where}: the object has no 'text' field")
    text = obj["text"]
    if not isinstance(text, str):
        raise invalid("invalid_json", f"{where}: 'text' must be a string, found {_json_type(text)}")
    if "labels" not in obj:
        raise invalid("invalid_json", f"{where}: the object has no 'labels' field (use [] for no label)")
    labels = obj["labels"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise invalid(
            "invalid_json", f"{where}: 'labels' must be a list of strings, found {_json_type(labels)}"
        )
    return {"text": _checked_text(text, where, limits), "labels": clean_labels(labels, where, limits)}


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
