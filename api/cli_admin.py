"""Admin commands of the `aplserve` CLI: `migrate` and `keys create`."""

from __future__ import annotations

import typer

keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


def migrate() -> None:
    """Upgrade the configured database to the newest schema (alembic upgrade head)."""
    from api.db.migrate import upgrade_to_head
    from api.settings import get_settings

    settings = get_settings()
    upgrade_to_head(settings)
    typer.echo("database is at the newest schema")


@keys_app.command("create")
def create_key(name: str = typer.Option(..., "--name", help="Owner of the key; created when new.")) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    from api.auth import create_api_key
    from api.db.migrate import upgrade_to_head
    from api.db.session import session_scope
    from api.settings import get_settings

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
