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
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from api.ingest.failures import invalid, quote
from api.ingest.limits import IngestLimits
from core.objects import UploadBody

#: What an ingest reads: a local file, or an upload as received into storage (core.objects).
Source = Path | UploadBody

UTF8_BOM = b"\xef\xbb\xbf"
#: The field delimiters a CSV's header is tried with, the default first.
SNIFFED_DELIMITERS = (",", ";", "\t")


def open_source(source: Source) -> IO[bytes]:
    """The upload as a seekable binary file (an S3 upload: ranged reads behind a read-ahead buffer)."""
    return source.open("rb") if isinstance(source, Path) else source.open()


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


def sniff_delimiter(header: str, columns: Mapping[str, str]) -> str:
    """The delimiter under which the header line names the most of the required columns.

    Excel writes `;` where the decimal mark is a comma, and exports tabs too; a header is
    short and known (it must name `columns`), so trying each candidate on it is a surer
    test than csv.Sniffer's guess from character frequencies. A tie keeps the comma.
    """
    wanted = {column.strip().lower() for column in columns.values()}

    def named(delimiter: str) -> int:
        try:
            cells = next(csv.reader([header], delimiter=delimiter), [])
        except csv.Error:
            return 0
        return len(wanted & {cell.strip().lower() for cell in cells})

    return max(SNIFFED_DELIMITERS, key=named)


def read_csv_records(
    stream: IO[bytes],
    source: str,
    columns: Mapping[str, str],
    limits: IngestLimits,
    optional: Mapping[str, str] | None = None,
    delimiter: str | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (first line of the record, {role: cell}) for the columns named by `columns` (role -> header).

    The header must name every required column once and an optional one at most
    once (case and surrounding spaces ignored); an optional column that is absent
    is absent from the records. Other columns are allowed and ignored; blank lines
    are skipped. Without a `delimiter`, the header's decides (`sniff_delimiter`).
    """
    position = {"line": 0}
    lines = numbered_lines(stream, source, limits)
    first = next(lines, None)

    def texts() -> Iterator[str]:
        for line_no, text in itertools.chain([first] if first else [], lines):
            position["line"] = line_no
            yield text

    chosen = delimiter or (sniff_delimiter(first[1], columns) if first else ",")
    reader = csv.reader(texts(), strict=True, delimiter=chosen)
    header = _next_row(reader, source, position)
    if header is None:
        raise invalid("invalid_csv_header", f"{source or 'the file'} is empty; expected a header row")
    index = _column_index(header, source, columns, optional or {})
    while True:
        start = position["line"] + 1
        row = _next_row(reader, source, position)
        if row is None:
            return
        if not row:
            continue
        if len(row) != len(header):
            raise invalid("invalid_csv", f"{at(source, start)} {_field_count_problem(len(row), len(header))}")
        yield start, {role: row[i] for role, i in index.items()}


def _field_count_problem(found: int, expected: int) -> str:
    """Quoting is the fix only when a row has more fields than the header (an unquoted comma)."""
    if found > expected:
        return (
            f"has {found} fields but the header has {expected}: a field holds an unquoted comma. Quote "
            "such fields (\"Hello, world\"); labels are separated by '|' (or the form field label_separator)"
        )
    return f"has {found} fields but the header has {expected}: a field is missing"


def _next_row(reader: Iterator[list[str]], source: str, position: dict[str, int]) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as exc:
        raise invalid("invalid_csv", f"{at(source, position['line'])} is not valid CSV ({exc})") from None


def _column_index(
    header: list[str], source: str, columns: Mapping[str, str], optional: Mapping[str, str]
) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header]
    index: dict[str, int] = {}
    for role, column in [*columns.items(), *optional.items()]:
        hits = [i for i, name in enumerate(names) if name == column.strip().lower()]
        if len(hits) == 1:
            index[role] = hits[0]
        elif hits or role in columns:
            wanted = " and ".join(repr(c) for c in columns.values())
            found = ", ".join(quote(cell, 30) for cell in header[:10]) or "nothing"
            problem = "names it twice" if hits else "lacks it"
            hint = (
                "" if hits else f"; if the column has another name, send it in the form field '{role}_column'"
            )
            raise invalid(
                "invalid_csv_header",
                f"{at(source, 1)}: the header must name the columns {wanted}; column {column!r}: "
                f"the header {problem} (found {found}){hint}",
            )
    return index
