"""Admin commands of the `aplserve` CLI: `migrate` and `keys create|list|revoke`."""

from __future__ import annotations

from datetime import datetime

import typer

keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


def migrate() -> None:
    """Upgrade the configured database to the newest schema (alembic upgrade head)."""
    from core.db.migrate import upgrade_to_head
    from core.settings import get_settings

    settings = get_settings()
    upgrade_to_head(settings)
    typer.echo("database is at the newest schema")


@keys_app.command("create")
def create_key(name: str = typer.Option(..., "--name", help="Owner of the key; created when new.")) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    from api.auth import create_api_key
    from core.db.migrate import upgrade_to_head
    from core.db.session import session_scope
    from core.settings import get_settings

    name = name.strip()
    if not name or len(name) > 200:
        raise typer.BadParameter("the name must be 1 to 200 characters", param_hint="--name")
    settings = get_settings()
    upgrade_to_head(settings)  # a fresh install can create its first key before `serve`
    with session_scope(settings) as session:
        owner, key = create_api_key(session, name)
        owner_name = owner.name
    typer.echo(f"created an API key for owner '{owner_name}'; it is shown only once:")
    typer.echo(key)


@keys_app.command("list")
def list_keys(
    name: str | None = typer.Option(None, "--name", help="Only the keys of this owner."),
) -> None:
    """List API keys (never their secrets): key id, owner, created, last used, revoked."""
    from api.auth import list_api_keys
    from aplserve.commands.common import console, table
    from core.db.session import session_scope
    from core.settings import get_settings

    with session_scope(get_settings()) as session:
        rows = list_api_keys(session, name)
    keys = table("KEY ID", "OWNER", "CREATED", "LAST USED", "REVOKED", flexible=("OWNER",))
    for row in rows:
        keys.add_row(
            row.key_id, row.owner_name, _when(row.created_at), _when(row.last_used_at), _when(row.revoked_at)
        )
    console().print(keys)


@keys_app.command("revoke")
def revoke_key(
    key_id: str = typer.Argument(..., help="The key id (`aplsk_<key id>_...`, or from `keys list`)."),
) -> None:
    """Revoke an API key. Servers stop accepting it within APLSERVE_AUTH_CACHE_SECONDS."""
    from api.auth import revoke_api_key
    from core.db.session import session_scope
    from core.settings import get_settings

    with session_scope(get_settings()) as session:
        found = revoke_api_key(session, key_id)
    if not found:
        typer.echo(f"no active API key with id '{key_id}'", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked API key {key_id}")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"
