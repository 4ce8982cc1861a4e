"""What every client command shares: where the server is, the key, output and errors.

The server URL and key come from options with environment fallbacks (APLSERVE_URL,
APLSERVE_API_KEY) rather than a settings class: they configure this client, not the
service, whose one settings class is core.settings.Settings.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TextIO

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from aplserve.client import APIError, Client

UrlOption = Annotated[str, typer.Option("--url", envvar="APLSERVE_URL", help="Base URL of the aplserve API.")]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="APLSERVE_API_KEY",
        help="API key (from `aplserve keys create`).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=200, help="How many to show, newest first.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every page, not just the newest --limit.")]


def _width(stream: TextIO) -> int | None:
    """A pipe gets wide lines rather than ids wrapped over two, unless COLUMNS says otherwise."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 200


def console() -> Console:
    return Console(width=_width(sys.stdout))


def errors() -> Console:
    return Console(stderr=True, width=_width(sys.stderr))


@contextmanager
def connected(url: str, api_key: str | None) -> Iterator[Client]:
    """A client for the command; an APIError ends the command with its detail and exit code 1."""
    try:
        with Client(url, api_key) as client:
            yield client
    except APIError as error:
        report(error)
        raise typer.Exit(1) from None
    except TimeoutError as error:
        errors().print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from None


def report(error: APIError) -> None:
    where = f"HTTP {error.status}, " if error.status else ""
    errors().print(f"[red]error:[/red] {error.detail} ({where}{error.code})", highlight=False, markup=True)
    for problem in error.errors:
        location = ".".join(str(part) for part in problem.get("loc", []))
        errors().print(f"  {location}: {problem.get('msg', '')}", highlight=False, markup=False)
    if error.status == 401:
        errors().print("  set APLSERVE_API_KEY or pass --api-key (create one with `aplserve keys create`)")
    elif error.status == 0:
        errors().print("  set APLSERVE_URL or pass --url to reach the server")


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [item.model_dump(mode="json") for item in value]
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(*columns: str, title: str | None = None) -> Table:
    result = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        result.add_column(column, no_wrap=column in ("id", "ID", "job", "model", "dataset"))
    return result


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def when(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
