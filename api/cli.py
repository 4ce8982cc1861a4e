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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Start the embedded worker."),
) -> None:
    """Migrate the database, start the API and, unless --no-worker, one embedded worker."""
    import uvicorn

    from api.main import create_app

    uvicorn.run(create_app(), host=host, port=port)


if __name__ == "__main__":
    app()
