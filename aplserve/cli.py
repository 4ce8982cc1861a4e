"""`aplserve`: the one Typer CLI, the composition root of the server, the worker and the admin commands."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from importlib.metadata import version as package_version

import typer

from aplserve.commands import register_client_commands
from aplserve.commands.admin import keys_app, migrate
from aplserve.commands.help_text import QuietTypesGroup
from aplserve.demo_data import demo_data_command

log = logging.getLogger("aplserve")

app = typer.Typer(
    help="aplserve: training-as-a-service for multi-label classification.",
    no_args_is_help=True,
    cls=QuietTypesGroup,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"aplserve {package_version('aplserve')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """aplserve: training-as-a-service for multi-label classification."""


app.command("migrate")(migrate)
app.add_typer(keys_app, name="keys")
app.command("demo-data")(demo_data_command)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Start the embedded worker process."),
    workers: int = typer.Option(
        1, min=1, help="API processes; on Linux each accepts on a listening socket of its own (SO_REUSEPORT)."
    ),
) -> None:
    """Migrate the database to head, start the API and, unless --no-worker, one embedded worker.

    Ctrl-C / SIGTERM stops the API first, then the worker.
    """
    import uvicorn

    from aplserve.server import processes
    from aplserve.server.http_protocol import server_options
    from core.settings import get_settings
    from worker.supervisor import EmbeddedWorker

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    migrate()
    embedded = EmbeddedWorker() if worker else None
    # uvicorn shuts down on SIGTERM / SIGINT, then raises the signal again with the
    # handlers it found; these make that a clean exit that still runs the `finally`.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    if embedded is not None:
        embedded.start()
    threading.Thread(target=announce_when_up, args=(host, port), name="announce", daemon=True).start()
    try:
        if workers > 1 and processes.supported():  # a listening socket per process
            processes.ServerProcesses(
                host,
                port,
                workers,
                server_options(settings),
                settings.log_level,
                hang_seconds=settings.api_hang_seconds,
            ).run()
        else:
            uvicorn.run(
                processes.APP,
                factory=True,
                host=host,
                port=port,
                workers=workers,
                **server_options(settings),
            )
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    finally:
        if embedded is not None:
            embedded.stop()


#: How long `serve` waits for its own /healthz before it stops waiting to say where it is.
ANNOUNCE_TIMEOUT_S = 120.0


def local_url(host: str, port: int) -> str:
    """A URL a browser on this machine can open (0.0.0.0 and :: are not addresses to visit)."""
    from aplserve.server.processes import local_address

    shown = local_address(host)
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def announce_when_up(host: str, port: int, timeout: float = ANNOUNCE_TIMEOUT_S) -> bool:
    """Once the API answers /healthz, print where the dashboard and the docs are (stdout)."""
    import httpx

    base = local_url(host, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        return False
    listening = f" (listening on {host})" if host in ("0.0.0.0", "::") else ""
    typer.echo(
        f"aplserve is up{listening}:\n"
        f"  dashboard  {base}/\n"
        f"  API docs   {base}/docs  (ReDoc: {base}/redoc)\n",
        nl=False,
    )
    sys.stdout.flush()
    return True


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
