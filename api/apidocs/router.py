"""/docs and /redoc from local assets (FastAPI's own pages load them from a CDN).

The HTML is FastAPI's; only the script, style and icon URLs point at
`/docs/assets/...`, served from `static/` (see its README.txt for versions and
licences). Swagger UI's online validator badge is switched off: it calls
validator.swagger.io.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from core.errors import AppError

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/docs/assets"
#: The files the pages load; nothing else under static/ is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "redoc.standalone.js": "text/javascript",
}
TITLE = "aplserve API"

router = APIRouter(include_in_schema=False)


def _openapi_url(request: Request) -> str:
    return request.app.openapi_url or "/openapi.json"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} · Swagger UI",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} · ReDoc",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_PATH + "/{name}")
def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise AppError(404, "not_found", "asset was not found")
    return FileResponse(
        STATIC_DIR / name,
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
