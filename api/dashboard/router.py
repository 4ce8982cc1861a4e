"""Routes for the dashboard: `/` (the single page) and `/static/...` (its assets).

Assets are served from the package directory, never from the network, so the
dashboard works on machines without internet access. The page gets a strict
Content-Security-Policy: scripts and styles only from this origin, no inline code,
so a label name or other user text can never run as script even if a bug rendered
it as HTML.
"""

from __future__ import annotations

import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi.responses import FileResponse, HTMLResponse

from api.routing import APIRouter
from core.errors import AppError

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
INDEX_HTML = PACKAGE_DIR / "templates" / "index.html"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: Asset URLs carry no version, so browsers revalidate them (cheap: ETag / Last-Modified).
ASSET_CACHE_CONTROL = "no-cache"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def _index_html() -> str:
    return INDEX_HTML.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The dashboard page; it signs in with an API key kept in the tab's sessionStorage."""
    return HTMLResponse(_index_html(), headers=SECURITY_HEADERS | {"Cache-Control": "no-cache"})


def _asset_path(path: str) -> Path:
    """The file under STATIC_DIR that `path` names; 404 for anything outside it or hidden."""
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise AppError(404, "not_found", "asset was not found")
    candidate = (STATIC_DIR / path).resolve()
    if not candidate.is_relative_to(STATIC_DIR) or not candidate.is_file():
        raise AppError(404, "not_found", "asset was not found")
    return candidate


@router.get("/static/{path:path}")
def static_asset(path: str) -> FileResponse:
    """The dashboard's scripts, styles and vendored chart library (with its license)."""
    asset = _asset_path(path)
    guessed = mimetypes.guess_type(asset.name)[0]
    media_type = MEDIA_TYPES.get(asset.suffix) or guessed or "application/octet-stream"
    return FileResponse(
        asset,
        media_type=media_type,
        headers={"Cache-Control": ASSET_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
    )
