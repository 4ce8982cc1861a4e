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


class CompactTable:
    """A table for 80 columns: fixed columns never shrink, the others give way, the least needed go.

    Rich shrinks every column of a table wider than the terminal, so at 80 columns an id
    or a status would be cut. Here each fixed column keeps the width of its widest cell;
    `flexible` columns share what is left and end with an ellipsis (names, where the start
    says enough); `wrap` columns share it too but wrap onto more lines (a sample's text,
    label lists: cut, they would mislead); and when even that does not fit, the `optional`
    columns are left out, first named first. The rich Table is built when printed, for the
    width it is printed at.
    """

    #: Between two columns: one space of right padding and the box's blank divider.
    GAP = 2
    #: The narrowest a column that gives way is made before optional columns are dropped.
    MIN_SHARE = 12

    def __init__(
        self,
        *columns: str,
        title: str | None,
        flexible: Sequence[str] = (),
        wrap: Sequence[str] = (),
        optional: Sequence[str] = (),
    ) -> None:
        self.columns, self.title = list(columns), title
        self.caption: str | None = None
        self._flexible = {columns.index(name) for name in flexible}
        self._wrap = {columns.index(name) for name in wrap}
        self._optional = [columns.index(name) for name in optional]
        self._widths = [len(column) for column in columns]
        self._rows: list[list[str]] = []

    def add_row(self, *cells: Any) -> None:
        row = [str(cell) for cell in cells]
        for index, cell in enumerate(row):
            self._widths[index] = max(self._widths[index], max(map(len, cell.splitlines() or [""])))
        self._rows.append(row)

    def _gives_way(self, index: int) -> bool:
        return index in self._flexible or index in self._wrap

    def _needed(self, shown: list[int]) -> int:
        widths = [
            min(self._widths[i], self.MIN_SHARE) if self._gives_way(i) else self._widths[i] for i in shown
        ]
        return sum(widths) + self.GAP * (len(shown) - 1)

    def _shown(self, width: int) -> list[int]:
        shown = list(range(len(self.columns)))
        for index in self._optional:
            if self._needed(shown) <= width:
                break
            shown.remove(index)
        return shown

    def _column_widths(self, shown: list[int], width: int) -> dict[int, int]:
        """Fixed columns their widest cell; the others share the rest, the narrowest served first."""
        fixed = [i for i in shown if not self._gives_way(i)]
        room = width - sum(self._widths[i] for i in fixed) - self.GAP * (len(shown) - 1)
        widths = {i: self._widths[i] for i in fixed}
        giving = sorted((i for i in shown if self._gives_way(i)), key=lambda i: self._widths[i])
        for count, index in enumerate(giving):
            widths[index] = min(self._widths[index], max(6, room // (len(giving) - count)))
            room -= widths[index]
        return widths

    def __rich_console__(self, console: Console, options: Any) -> Any:
        shown = self._shown(options.max_width)
        widths = self._column_widths(shown, options.max_width)
        table = Table(
            title=self.title,
            caption=self.caption,
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1, 0, 0),
        )
        for index in shown:
            fixed = not self._gives_way(index)
            table.add_column(
                self.columns[index],
                overflow="ellipsis" if index in self._flexible else "fold",
                no_wrap=index not in self._wrap,
                min_width=widths[index] if fixed else None,
                max_width=None if fixed else widths[index],
            )
        for row in self._rows:
            table.add_row(*(row[index] for index in shown))
        yield table

    def natural_width(self) -> int:
        """The width the table takes with no column cut (what --wide prints)."""
        return sum(self._widths) + self.GAP * (len(self._widths) - 1)


def show(rows: CompactTable, wide: bool = False) -> None:
    """Print a table on stdout; with --wide as wide as its content, whatever the terminal."""
    out = console()
    if wide:
        out = Console(width=max(out.width, rows.natural_width()))
    out.print(rows)


def table(
    *columns: str,
    title: str | None = None,
    flexible: Sequence[str] = (),
    wrap: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> CompactTable:
    """A compact table (no outer border) for 80 columns: see `CompactTable` for who gives way."""
    return CompactTable(*columns, title=title, flexible=flexible, wrap=wrap, optional=optional)


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
