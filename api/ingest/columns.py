"""How an upload is read: which CSV columns (or JSONL keys) hold what, and how labels are separated.

One `UploadOptions` carries every choice the uploader can make (multipart fields
`text_column`, `labels_column`, `filename_column`, `label_separator`), and the
readers ask it by *role* ("text", "labels", "filename"), never by header name. An
extra column is one more role: add it to `required_columns` or `optional_columns`
and the CSV reader finds it, reports it when missing or doubled, and hands its cell
to the reader under the role's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from api.ingest.failures import invalid, quote
from api.ingest.labels import LABEL_SEPARATOR, clean_labels, clean_unknown
from api.ingest.limits import IngestLimits
from core.errors import AppError

#: What a column holds ("text", "labels", "filename"); readers look cells up by role.
Role = str
Kind = Literal["text", "image"]

#: Form fields naming a column, by the role the column plays.
COLUMN_FIELDS: dict[str, Role] = {
    "text_column": "text",
    "labels_column": "labels",
    "filename_column": "filename",
}
SEPARATOR_FIELD = "label_separator"
DELIMITER_FIELD = "delimiter"
#: What the form field `delimiter` may name ("tab" spells the tab character, hard to type in a form).
DELIMITERS = {",": ",", ";": ";", "\t": "\t", "tab": "\t", "|": "|"}
#: Characters that, in a labels cell read with the default separator, usually mean another separator.
SUSPICIOUS_SEPARATORS = (",", ";")
MAX_SEPARATOR_CHARS = 8
MAX_COLUMN_CHARS = 100
#: The roles each kind of file needs, in the order errors name them.
ROLES_BY_KIND: dict[Kind, tuple[Role, ...]] = {"text": ("text", "labels"), "image": ("filename", "labels")}
#: The role (and column, key) of the label names a sample leaves unknown (partial annotation).
UNKNOWN_ROLE: Role = "unknown"


def _option_error(name: str, message: str) -> AppError:
    return AppError(
        422,
        "invalid_upload_option",
        f"{name}: {message}",
        errors=[{"loc": ["body", name], "msg": message}],
    )


def _delimiter(fields: Mapping[str, str]) -> str | None:
    given = fields.get(DELIMITER_FIELD) or None
    if given is None:
        return None
    if given not in DELIMITERS:
        raise _option_error(DELIMITER_FIELD, "one of ',', ';', '|', or 'tab' (or a tab character)")
    return DELIMITERS[given]


@dataclass(frozen=True)
class UploadOptions:
    """The uploader's reading choices; the defaults are the formats of the API contract."""

    #: role -> the header name (CSV) or key (JSONL) the uploader named for it.
    columns: Mapping[Role, str] = field(default_factory=dict)
    #: None: not given, so the default `|` applies and suspicious cells are refused.
    label_separator: str | None = None
    #: The CSV field delimiter; None: sniffed from the header (`lines.read_csv_records`).
    delimiter: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> UploadOptions:
        """Read the multipart text fields; an empty field counts as not given."""
        columns: dict[Role, str] = {}
        for name, role in COLUMN_FIELDS.items():
            value = (fields.get(name) or "").strip()
            if not value:
                continue
            if len(value) > MAX_COLUMN_CHARS:
                raise _option_error(name, f"at most {MAX_COLUMN_CHARS} characters")
            columns[role] = value
        separator = fields.get(SEPARATOR_FIELD) or None
        if separator is not None and (
            len(separator) > MAX_SEPARATOR_CHARS or not separator.isprintable() or '"' in separator
        ):
            raise _option_error(
                SEPARATOR_FIELD, f"1 to {MAX_SEPARATOR_CHARS} printable characters, without '\"'"
            )
        return cls(columns=columns, label_separator=separator, delimiter=_delimiter(fields))

    def as_fields(self) -> dict[str, str]:
        """The options that were given, as their form fields (what a Dataset shows and dedupe compares)."""
        given = {name: self.columns[role] for name, role in COLUMN_FIELDS.items() if role in self.columns}
        if self.label_separator is not None:
            given[SEPARATOR_FIELD] = self.label_separator
        if self.delimiter is not None:
            given[DELIMITER_FIELD] = "tab" if self.delimiter == "\t" else self.delimiter
        return given

    def check_applies_to(self, kind: Kind) -> None:
        """Refuse options that mean nothing for this kind of file instead of ignoring them."""
        for name, role in COLUMN_FIELDS.items():
            if role in self.columns and role not in ROLES_BY_KIND[kind]:
                wanted = "a .zip of images" if role == "filename" else "a .csv or .jsonl text dataset"
                raise _option_error(name, f"applies to {wanted} only")

    def column(self, role: Role) -> str:
        """The header name (CSV) or key (JSONL) that holds `role`: the uploader's, else the role's own."""
        return self.columns.get(role, role)

    def required_columns(self, kind: Kind) -> dict[Role, str]:
        return {role: self.column(role) for role in ROLES_BY_KIND[kind]}

    def optional_columns(self, kind: Kind) -> dict[Role, str]:
        """Columns a file may have: `unknown`, the label names a sample leaves unannotated."""
        return {UNKNOWN_ROLE: UNKNOWN_ROLE}

    @property
    def separator(self) -> str:
        return self.label_separator or LABEL_SEPARATOR

    def split_labels(self, raw: str, where: str, limits: IngestLimits) -> list[str]:
        """Parse one labels cell; an empty cell means no label.

        With the default separator, a cell holding `,` or `;` is refused: it is far more
        often a list in another format (which would become one made-up label per row)
        than a label name with a comma. Naming the separator, even `|`, accepts it.
        """
        if not raw.strip():
            return []
        if self.label_separator is None:
            found = next((ch for ch in SUSPICIOUS_SEPARATORS if ch in raw), None)
            if found is not None:
                raise self._suspicious(raw, found, where)
        return clean_labels(raw.split(self.separator), where, limits, self.separator)

    def split_unknown(
        self, raw: str | None, labels: list[str], where: str, limits: IngestLimits
    ) -> list[str]:
        """Parse one `unknown` cell (absent column or empty cell: nothing unknown) like a labels cell.

        A name both in `labels` and here is refused (422 `label_known_and_unknown`).
        """
        if raw is None or not raw.strip():
            return []
        if self.label_separator is None:
            found = next((ch for ch in SUSPICIOUS_SEPARATORS if ch in raw), None)
            if found is not None:
                raise self._suspicious(raw, found, where, UNKNOWN_ROLE)
        return clean_unknown(raw.split(self.separator), labels, where, limits, self.separator)

    def _suspicious(self, raw: str, found: str, where: str, role: Role = "labels") -> AppError:
        column = self.column(role)
        return invalid(
            "suspicious_label_separator",
            f"{where}: the {column!r} cell {quote(raw)} contains {found!r}, but labels are separated by "
            f"{LABEL_SEPARATOR!r} unless the form field {SEPARATOR_FIELD!r} says otherwise. If {found!r} "
            f"separates your labels, upload again with {SEPARATOR_FIELD}={found!r}; if it is part of a "
            f"label name, send {SEPARATOR_FIELD}={LABEL_SEPARATOR!r} to keep it",
        )
