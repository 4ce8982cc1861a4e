"""The `aplserve` command line (Typer)."""

from __future__ import annotations

import typer

from api.cli_admin import keys_app, migrate
from api.demo_data import demo_data_command

app = typer.Typer(
    help="aplserve: training-as-a-service for multi-label classification.", no_args_is_help=True
)
app.command("migrate")(migrate)
app.add_typer(keys_app, name="keys")
app.command("demo-data")(demo_data_command)


if __name__ == "__main__":
    app()
