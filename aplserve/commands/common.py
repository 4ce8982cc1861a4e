"""What every client command shares: where the server is, the key, output, ids and errors.

The server URL and key come from options with environment fallbacks (APLSERVE_URL,
APLSERVE_API_KEY) rather than a settings class: they configure this client, not the
service, whose one settings class is core.settings.Settings.

Errors are one line on stderr, `error: <what went wrong> (<code>)`, never a
traceback. Exit codes: 2 when the request or the command line was refused as given
(4xx answers, a short id that names nothing or several things, a file that is not
there, a delete without confirmation), 1 when the service failed or could not be
reached, or a watched job did not succeed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TextIO

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.validation_messages import field_name
from aplserve.client import APIError, Client

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="APLSERVE_URL",
        help="Base URL of the aplserve API [default: http://127.0.0.1:8000].",
        show_default=False,
    ),
]
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
WideOption = Annotated[bool, typer.Option("--wide", help="Whole ids and more columns (wider than 80).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the id (for scripts: DS=$(aplserve ... -q)).")
]

#: Exit codes: the input was refused as given / the service failed (see the module docstring).
USER_ERROR = 2
SERVICE_ERROR = 1
SHORT_ID = 8


def _width(stream: TextIO) -> int | None:
    """A pipe gets wide lines rather than ids wrapped over two, unless COLUMNS says otherwise."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 200


def console() -> Console:
    return Console(width=_width(sys.stdout))


def errors() -> Console:
    return Console(stderr=True, width=_width(sys.stderr), soft_wrap=True)


def fail(detail: str, code: str, *, exit_code: int = USER_ERROR) -> NoReturn:
    """End the command with one line on stderr: `error: <detail> (<code>)`."""
    errors().print(f"[red]error:[/red] {_one_line(detail)} ({code})", highlight=False, markup=True)
    raise typer.Exit(exit_code)


def _one_line(text: str) -> str:
    return escape(" ".join(text.split()))


#: Body fields whose flag is not the field's own name with dashes (`loss.gamma_neg` is `--gamma-neg`).
_FLAGS = {
    ("loss", "name"): "--loss",
    ("learning_rate",): "--lr",
    ("dataset_id",): "--dataset",
    ("base_model",): "--model",
    ("test_dataset_id",): "--test-dataset",
    ("candidates",): "--candidate",
    ("seeds",): "--seed",
}


def _flag(loc: list[Any]) -> str:
    """The command-line flag that sets the body field at `loc` (`["body", "loss", "clip"]` -> `--clip`)."""
    parts = tuple(part for part in loc if isinstance(part, str) and part != "body")
    for size in (2, 1):
        for start in range(len(parts) - size + 1):
            flag = _FLAGS.get(parts[start : start + size])
            if flag is not None:
                return flag
    return "--" + parts[-1].replace("_", "-") if parts else ""


def in_flags(error: APIError) -> str:
    """A 422's detail with the field it names written as the flag a CLI user typed."""
    if error.code != "validation_error" or not error.errors:
        return error.detail
    loc = list(error.errors[0].get("loc") or [])
    flag = _flag(loc)
    return error.detail.replace(f"`{field_name(loc)}`", f"`{flag}`") if flag else error.detail


def _hint(error: APIError) -> str:
    if error.code == "validation_error":
        return ""  # the service's detail already counts the further problems
    if error.status == 401:
        return "; set APLSERVE_API_KEY or pass --api-key (create one with `aplserve keys create`)"
    if error.code in ("unreachable", "timeout"):
        return "; set APLSERVE_URL or pass --url to reach the server"
    more = len(error.errors) - 1
    return f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""


def report(error: APIError) -> NoReturn:
    code = SERVICE_ERROR if not error.is_user_error else USER_ERROR
    fail(f"{in_flags(error)}{_hint(error)}", error.code, exit_code=code)


@contextmanager
def connected(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client for the command; every failure ends the command with one line (see the module docstring)."""
    try:
        with Client(url, api_key) as client:
            yield client
    except APIError as error:
        report(error)
    except TimeoutError as error:
        fail(str(error), "timeout", exit_code=SERVICE_ERROR)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error), "file_error")


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [item.model_dump(mode="json") for item in value]
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


class CompactTable(Table):
    """A table whose fixed columns never shrink: only the `flexible` ones give way (with an ellipsis).

    Rich shrinks every column of a table wider than the terminal, so at 80 columns an id
    or a status would be cut; here each fixed column keeps the width of its widest cell
    and the flexible ones share what is left, the narrowest needs served first.
    """

    #: Between two columns: one space of right padding and the box's blank divider.
    GAP = 2

    def __init__(self, *columns: str, title: str | None, flexible: Sequence[str]) -> None:
        super().__init__(
            title=title,
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1, 0, 0),
        )
        self._flexible = {index for index, column in enumerate(columns) if column in flexible}
        self._widths = [len(column) for column in columns]
        for index, column in enumerate(columns):
            overflow = "ellipsis" if index in self._flexible else "fold"
            self.add_column(column, overflow=overflow, no_wrap=True)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        for index, cell in enumerate(cells):
            self._widths[index] = max(self._widths[index], len(str(cell)))
        super().add_row(*cells, **kwargs)

    def __rich_console__(self, console: Console, options: Any) -> Any:
        fixed = [index for index in range(len(self.columns)) if index not in self._flexible]
        for index in fixed:
            self.columns[index].min_width = self._widths[index]
        room = options.max_width - sum(self._widths[i] for i in fixed) - self.GAP * (len(self.columns) - 1)
        flexible = sorted(self._flexible, key=lambda index: self._widths[index])
        for count, index in enumerate(flexible):
            share = max(6, room // (len(flexible) - count))
            self.columns[index].max_width = min(self._widths[index], share)
            room -= self.columns[index].max_width
        return super().__rich_console__(console, options)

    def natural_width(self) -> int:
        """The width the table takes with no column cut (what --wide prints)."""
        return sum(self._widths) + self.GAP * (len(self._widths) - 1)


def show(rows: Table, wide: bool = False) -> None:
    """Print a table on stdout; with --wide as wide as its content, whatever the terminal."""
    out = console()
    if wide and isinstance(rows, CompactTable):
        out = Console(width=max(out.width, rows.natural_width()))
    out.print(rows)


def table(*columns: str, title: str | None = None, flexible: Sequence[str] = ()) -> Table:
    """A compact table (no outer border) for 80 columns: `flexible` columns give way with an ellipsis."""
    return CompactTable(*columns, title=title, flexible=flexible)


def short(identifier: str | None, wide: bool = False) -> str:
    """The first 8 characters of an id (any command takes them back), or the whole id with --wide."""
    if not identifier:
        return "-"
    return identifier if wide else identifier[:SHORT_ID]


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def when(value: Any, *, seconds: bool = True) -> str:
    """`2026-01-15 09:30:02`, or in tables meant for 80 columns `01-15 09:30`."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")


def confirm_or_refuse(question: str, yes: bool) -> None:
    """Ask before a delete; without a terminal to ask on, refuse unless --yes was given."""
    if yes:
        return
    if not interactive():
        fail("not deleting without confirmation: stdin is not a terminal; pass --yes", "confirmation_needed")
    if not typer.confirm(question, default=False):
        fail("nothing was deleted", "cancelled_by_user")


def interactive() -> bool:
    return sys.stdin.isatty()
