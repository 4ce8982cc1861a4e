"""`aplserve datasets upload|list|get|delete`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from aplserve.client import APIError, Dataset
from aplserve.commands.common import (
    AllOption,
    JsonOption,
    KeyOption,
    LimitOption,
    QuietOption,
    UrlOption,
    WideOption,
    YesOption,
    confirm_or_refuse,
    connected,
    console,
    print_json,
    short,
    show,
    table,
    when,
)

app = typer.Typer(help="Upload and manage datasets.", no_args_is_help=True)

READING = "Reading the file"
DatasetId = Annotated[str, typer.Argument(help="Dataset id, or its first 6+ characters.", show_default=False)]


def show_dataset(dataset: Dataset) -> None:
    out = console()
    out.print(
        f"dataset [bold]{dataset.id}[/bold] '{dataset.name}': {dataset.num_samples} {dataset.modality} "
        f"samples ({dataset.format}), {len(dataset.labels)} labels, "
        f"{dataset.label_cardinality:.2f} labels per sample",
        highlight=False,
    )
    if dataset.upload_options:
        options = ", ".join(f"{key}={value!r}" for key, value in dataset.upload_options.items())
        out.print(f"  read with {options}", highlight=False)
    counts = table("label", "samples", flexible=("label",))
    for label in dataset.labels:
        counts.add_row(label, str(dataset.label_counts.get(label, 0)))
    out.print(counts)
    for warning in dataset.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


@app.command("upload")
def upload(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help=".csv, .jsonl or .zip")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Defaults to the file name.")] = None,
    text_column: Annotated[
        str | None,
        typer.Option(help="The column (JSONL key) of the texts [default: text].", rich_help_panel=READING),
    ] = None,
    labels_column: Annotated[
        str | None,
        typer.Option(help="The column (JSONL key) of the labels [default: labels].", rich_help_panel=READING),
    ] = None,
    filename_column: Annotated[
        str | None,
        typer.Option(
            help="ZIP: the labels.csv column of image paths [default: filename].", rich_help_panel=READING
        ),
    ] = None,
    label_separator: Annotated[
        str | None,
        typer.Option(help="What separates labels in a CSV cell [default: |].", rich_help_panel=READING),
    ] = None,
    dedupe: Annotated[
        bool, typer.Option("--dedupe", help="Identical bytes already uploaded: reuse that dataset.")
    ] = False,
    quiet: QuietOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload a dataset file (streamed, with a progress bar on stderr)."""
    with connected(url, api_key) as client:
        try:
            dataset = client.datasets.upload(
                file,
                name,
                progress=not quiet,
                text_column=text_column,
                labels_column=labels_column,
                filename_column=filename_column,
                label_separator=label_separator,
                dedupe=dedupe,
            )
        except APIError as error:
            raise _with_options(error) from None
    if quiet:
        typer.echo(dataset.id)
    else:
        print_json(dataset) if json_output else show_dataset(dataset)


_FIELD = re.compile(r"(send (?:it in )?)?the form field '([a-z_]+)'")
_ASSIGNED = re.compile(r"\b([a-z]+_(?:column|separator))=('[^']*')")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _with_options(error: APIError) -> APIError:
    """The server names its form fields (`the form field 'text_column'`); here they are options."""
    detail = _FIELD.sub(lambda m: ("pass " if m.group(1) else "") + _option(m.group(2)), error.detail)
    detail = _ASSIGNED.sub(lambda m: f"{_option(m.group(1))} {m.group(2)}", detail)
    return APIError(error.status, error.code, detail, title=error.title, errors=error.errors)


@app.command("list")
def list_datasets(
    limit: LimitOption = 20,
    every: AllOption = False,
    wide: WideOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your datasets, newest first."""
    with connected(url, api_key) as client:
        items = list(client.datasets.iterate()) if every else client.datasets.list(limit=limit).items
    if json_output:
        print_json(items)
        return
    rows = table(
        "id", "name", "kind", "format", "samples", "labels", "created", flexible=() if wide else ("name",)
    )
    for d in items:
        rows.add_row(
            short(d.id, wide),
            d.name,
            d.modality,
            d.format,
            str(d.num_samples),
            str(len(d.labels)),
            when(d.created_at, seconds=wide),
        )
    show(rows, wide)


@app.command("get")
def get(
    dataset_id: DatasetId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One dataset with its label counts."""
    with connected(url, api_key) as client:
        dataset = client.datasets.get(client.datasets.resolve(dataset_id))
    print_json(dataset) if json_output else show_dataset(dataset)


@app.command("delete")
def delete(
    dataset_id: DatasetId, yes: YesOption = False, url: UrlOption = None, api_key: KeyOption = None
) -> None:
    """Delete a dataset and its files (refused while a queued or running job uses it); asks first."""
    with connected(url, api_key) as client:
        dataset = client.datasets.get(client.datasets.resolve(dataset_id))
        confirm_or_refuse(
            f"Delete dataset {dataset.id} '{dataset.name}' ({dataset.num_samples} samples)?", yes
        )
        client.datasets.delete(dataset.id)
    typer.echo(f"deleted dataset {dataset.id}")
