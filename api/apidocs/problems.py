"""The pages a problem's `type` points at: what each error code means and what to do about it.

Every problem+json answer names its code's page (`core.errors.problem_type`), so a person
who meets `"type": "/problems/storage-full"` can open it on the same server, with or
without network, and read the advice `docs/errors.md` gives (both come from
`core.error_codes`).
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from core.error_codes import ERROR_CODES, JOB_ERROR_CODES
from core.errors import PROBLEM_TYPE_PATH, AppError, problem_type

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · aplserve</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:0 .25rem}}td,th{{text-align:left;padding:.2rem .6rem .2rem 0}}</style>
</head><body>{body}<p><a href="{index}">All error codes</a> · <a href="/docs">API reference</a></p>
</body></html>"""


def _code_of(slug: str) -> str:
    return slug.replace("-", "_")


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body, index=PROBLEM_TYPE_PATH.rstrip("/")))


@router.get(PROBLEM_TYPE_PATH.rstrip("/"), response_class=HTMLResponse)
def problem_index() -> HTMLResponse:
    rows = "".join(
        f'<tr><td><a href="{problem_type(code)}"><code>{code}</code></a></td>'
        f"<td>{', '.join(map(str, entry.statuses))}</td><td>{escape(entry.area)}</td></tr>"
        for code, entry in ERROR_CODES.items()
    )
    jobs = "".join(
        f'<tr><td><a href="{problem_type(code)}"><code>{code}</code></a></td></tr>'
        for code in JOB_ERROR_CODES
    )
    body = (
        "<h1>aplserve error codes</h1><table><tr><th>code</th><th>status</th><th>where</th></tr>"
        f"{rows}</table><h2>Failed jobs (<code>error.code</code>)</h2><table>{jobs}</table>"
    )
    return _page("Error codes", body)


@router.get(PROBLEM_TYPE_PATH + "{slug}", response_class=HTMLResponse)
def problem_page(slug: str) -> HTMLResponse:
    code = _code_of(slug)
    entry, job_entry = ERROR_CODES.get(code), JOB_ERROR_CODES.get(code)
    if entry is None and job_entry is None:
        raise AppError(404, "not_found", "no such error code")
    parts = [f"<h1><code>{code}</code></h1>"]
    if entry is not None:
        statuses = ", ".join(str(status) for status in entry.statuses)
        parts.append(f"<p>HTTP {statuses} · {escape(entry.area)}</p><p>{escape(entry.advice)}</p>")
    if job_entry is not None:
        parts.append(f"<h2>As a failed job's <code>error.code</code></h2><p>{escape(job_entry.advice)}</p>")
    return _page(code, "".join(parts))
