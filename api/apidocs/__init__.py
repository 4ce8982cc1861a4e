"""The API documentation pages, /docs (Swagger UI) and /redoc (ReDoc), with their assets
vendored in this package so the pages work without internet access."""

from api.apidocs.router import router

__all__ = ["router"]
