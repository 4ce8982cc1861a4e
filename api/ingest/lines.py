"""Bounded, strictly decoded lines and CSV records from a binary stream.

Lines are read one at a time with a length cap and decoded one at a time, so a
file of any size streams through in constant memory and a bad byte is reported
on the exact physical line that holds it (a TextIOWrapper decodes ahead in
chunks and would report the error lines early). Splitting on b"\\n" before
decoding is safe because that byte never occurs inside a multi-byte UTF-8
sequence.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from typing import IO

from api.ingest.failures import invalid, quote
from api.ingest.limits import IngestLimits

UTF8_BOM = b"\xef\xbb\xbf"


def at(source: str, line: int) -> str:
    """'line 7' for the uploaded file itself, 'labels.csv line 7' for a ZIP member."""
    return f"{source} line {line}" if source else f"line {line}"


def numbered_lines(stream: IO[bytes], source: str, limits: IngestLimits) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line with its line ending)."""
    line_no = 0
    while True:
        raw = stream.readline(limits.max_line_bytes + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > limits.max_line_bytes:
            raise invalid(
                "line_too_long", f"{at(source, line_no)} is longer than {limits.max_line_bytes} bytes"
            )
        if line_no == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(
                "invalid_encoding",
                f"{at(source, line_no)} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position "
                f"{exc.start + 1}); save the file with UTF-8 encoding",
            ) from None
        yield line_no, text


def read_csv_records(
    stream: IO[bytes], source: str, columns: Sequence[str], limits: IngestLimits
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (first line of the record, {column: cell}) for the named columns.

    The header must name every column in `columns` once (case and surrounding
    spaces ignored); other columns are allowed and ignored. Blank lines are skipped.
    """
    position = {"line": 0}

    def texts() -> Iterator[str]:
        for line_no, text in numbered_lines(stream, source, limits):
            position["line"] = line_no
            yield text

    reader = csv.reader(texts(), strict=True)
    header = _next_row(reader, source, position)
    if header is None:
        raise invalid("invalid_csv_header", f"{source or 'the file'} is empty; expected a header row")
    index = _column_index(header, source, columns)
    while True:
        start = position["line"] + 1
        row = _next_row(reader, source, position)
        if row is None:
            return
        if not row:
            continue
        if len(row) != len(header):
            raise invalid(
                "invalid_csv",
                f"{at(source, start)} has {len(row)} fields but the header has {len(header)} "
                "(quote fields that contain commas)",
            )
        yield start, {name: row[i] for name, i in index.items()}


def _next_row(reader: Iterator[list[str]], source: str, position: dict[str, int]) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as exc:
        raise invalid("invalid_csv", f"{at(source, position['line'])} is not valid CSV ({exc})") from None


def _column_index(header: list[str], source: str, columns: Sequence[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header]
    index: dict[str, int] = {}
    for column in columns:
        hits = [i for i, name in enumerate(names) if name == column]
        if len(hits) != 1:
            wanted = " and ".join(repr(c) for c in columns)
            found = ", ".join(quote(cell, 30) for cell in header[:10]) or "nothing"
            problem = "names it twice" if hits else "lacks it"
            raise invalid(
                "invalid_csv_header",
                f"{at(source, 1)}: the header must name the columns {wanted}; column {column!r}: "
                f"the header {problem} (found {found})",
            )
        index[column] = hits[0]
    return index
