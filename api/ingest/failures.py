"""How ingest reports a bad dataset: one status for content errors, one for unknown formats."""

from __future__ import annotations

from core.errors import AppError

INVALID_DATASET_STATUS = 422
UNSUPPORTED_FORMAT_STATUS = 415


def invalid(code: str, detail: str) -> AppError:
    """A dataset whose bytes arrived intact but whose content cannot be used.

    Every such failure shares status 422 so clients can branch on `code` alone; the
    detail names the line or ZIP member so a person can fix the file.
    """
    return AppError(INVALID_DATASET_STATUS, code, detail, title="Invalid dataset")


def unsupported_format(detail: str) -> AppError:
    return AppError(
        UNSUPPORTED_FORMAT_STATUS, "unsupported_format", detail, title="Unsupported dataset format"
    )


def quote(value: str, limit: int = 60) -> str:
    """Echo user content back in a detail without letting a huge value flood the message."""
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(shown)
