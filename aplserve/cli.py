"""`aplserve`: the one Typer CLI, the composition root of the server, the worker and the admin commands."""

from __future__ import annotations

import logging
import signal

import typer

from aplserve.commands import register_client_commands
from aplserve.commands.admin import keys_app, migrate
from aplserve.demo_data import demo_data_command

log = logging.getLogger("aplserve")

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
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Start the embedded worker process."),
    workers: int = typer.Option(1, min=1, help="API processes (uvicorn workers)."),
) -> None:
    """Migrate the database to head, start the API and, unless --no-worker, one embedded worker.

    Ctrl-C / SIGTERM stops the API first, then the worker.
    """
    import uvicorn

    from core.settings import get_settings
    from worker.supervisor import EmbeddedWorker

    logging.basicConfig(
        level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    migrate()
    embedded = EmbeddedWorker() if worker else None
    # uvicorn shuts down on SIGTERM / SIGINT, then raises the signal again with the
    # handlers it found; these make that a clean exit that still runs the `finally`.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    if embedded is not None:
        embedded.start()
    try:
        uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    finally:
        if embedded is not None:
            embedded.stop()


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


@app.command("worker")
def worker_command(
    concurrency: int = typer.Option(1, min=1, help="Jobs run at once (one process each)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """A Celery worker for the configured broker (full mode: start as many as you have GPUs)."""
    from worker.app import main

    main(concurrency=concurrency, loglevel=loglevel)


register_client_commands(app)  # datasets, jobs, sweeps, models, predict, webhooks (over HTTP)

if __name__ == "__main__":
    app()
