"""`aplserve datasets upload|list|get|delete`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aplserve.client import DEFAULT_URL, Dataset
from aplserve.commands.common import (
    AllOption,
    JsonOption,
    KeyOption,
    LimitOption,
    UrlOption,
    connected,
    console,
    print_json,
    table,
    when,
)

app = typer.Typer(help="Upload and manage datasets.", no_args_is_help=True)


def show_dataset(dataset: Dataset) -> None:
    out = console()
    out.print(
        f"dataset [bold]{dataset.id}[/bold] '{dataset.name}': {dataset.num_samples} {dataset.modality} "
        f"samples ({dataset.format}), {len(dataset.labels)} labels, "
        f"{dataset.label_cardinality:.2f} labels per sample",
        highlight=False,
    )
    counts = table("label", "samples")
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
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload a dataset file (streamed, with a progress bar on stderr)."""
    with connected(url, api_key) as client:
        dataset = client.datasets.upload(file, name, progress=True)
    print_json(dataset) if json_output else show_dataset(dataset)


@app.command("list")
def list_datasets(
    limit: LimitOption = 20,
    every: AllOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your datasets, newest first."""
    with connected(url, api_key) as client:
        items = list(client.datasets.iterate()) if every else client.datasets.list(limit=limit).items
    if json_output:
        print_json(items)
        return
    rows = table("id", "name", "modality", "format", "samples", "labels", "created")
    for d in items:
        rows.add_row(
            d.id, d.name, d.modality, d.format, str(d.num_samples), str(len(d.labels)), when(d.created_at)
        )
    console().print(rows)


@app.command("get")
def get(
    dataset_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One dataset with its label counts."""
    with connected(url, api_key) as client:
        dataset = client.datasets.get(dataset_id)
    print_json(dataset) if json_output else show_dataset(dataset)


@app.command("delete")
def delete(dataset_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Delete a dataset (refused while a queued or running job uses it)."""
    with connected(url, api_key) as client:
        client.datasets.delete(dataset_id)
    typer.echo(f"deleted dataset {dataset_id}")
