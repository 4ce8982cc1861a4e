"""Typed request dependencies: `SettingsDep`, `SessionDep`, `OwnerDep`.

Settings come from `app.state.settings` (set by `create_app`), so a test can build
an app for its own database and broker without touching the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import Principal, authenticate, default_principal
from api.db.session import session_factory
from api.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A session per request; services commit what they change, anything else is rolled back."""
    with session_factory(settings)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

# Declared for the OpenAPI page (the "Authorize" button); the check itself is `authenticate`,
# which answers problem+json instead of FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="An API key from `aplserve keys create --name NAME`.")


def get_principal(
    request: Request,
    settings: SettingsDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    with session_factory(settings)() as session:
        if not settings.auth_enabled:
            return default_principal(session, settings.default_owner)
        return authenticate(session, request.headers.get("authorization"))


OwnerDep = Annotated[Principal, Depends(get_principal)]
