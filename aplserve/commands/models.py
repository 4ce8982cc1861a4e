"""`aplserve models list|get|download|delete` and `aplserve predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aplserve.client import DEFAULT_URL, Model, Prediction
from aplserve.commands.common import (
    AllOption,
    JsonOption,
    KeyOption,
    LimitOption,
    UrlOption,
    connected,
    console,
    fmt,
    print_json,
    table,
    when,
)

app = typer.Typer(help="Trained models: list, inspect, download, delete.", no_args_is_help=True)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


def _metric(model: Model, name: str) -> str:
    value = model.metrics.get(name)
    return fmt(value) if isinstance(value, float) else "-"


def show_model(model: Model) -> None:
    out = console()
    out.print(f"model [bold]{model.id}[/bold] ({model.modality}, {model.base_model})", highlight=False)
    out.print(f"  job {model.job_id}, created {when(model.created_at)}", highlight=False)
    out.print(
        f"  mAP {_metric(model, 'map')}, micro-F1 {_metric(model, 'micro_f1')}, "
        f"macro-F1 {_metric(model, 'macro_f1')}",
        highlight=False,
    )
    out.print(
        f"  artifact {model.artifact.size_bytes} bytes, sha256 {model.artifact.sha256}", highlight=False
    )
    rows = table("label", "threshold")
    for label in model.labels:
        rows.add_row(label, fmt(model.thresholds.get(label)))
    out.print(rows)


@app.command("list")
def list_models(
    limit: LimitOption = 20,
    every: AllOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your trained models, newest first."""
    with connected(url, api_key) as client:
        items = list(client.models.iterate()) if every else client.models.list(limit=limit).items
    if json_output:
        print_json(items)
        return
    rows = table("id", "base model", "modality", "labels", "mAP", "micro-F1", "job", "created")
    for m in items:
        rows.add_row(
            m.id,
            m.base_model,
            m.modality,
            str(len(m.labels)),
            _metric(m, "map"),
            _metric(m, "micro_f1"),
            m.job_id,
            when(m.created_at),
        )
    console().print(rows)


@app.command("get")
def get(
    model_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One model with its labels and decision thresholds."""
    with connected(url, api_key) as client:
        model = client.models.get(model_id)
    print_json(model) if json_output else show_model(model)


@app.command("download")
def download(
    model_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File or existing directory (default: here).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Download the model's artifact (safetensors + JSON); its SHA-256 is checked."""
    with connected(url, api_key) as client:
        path = client.models.download(model_id, output, progress=True)
    typer.echo(str(path))


def _as_input(value: str) -> str | Path:
    """An existing image file is sent as an image; anything else as text."""
    path = Path(value)
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            return path
    except OSError:  # a long text is not a valid path on every system
        pass
    return value


def show_predictions(inputs: list[str], predictions: list[Prediction]) -> None:
    """A table; a label marked * is there only because of min_labels (below its threshold)."""
    rows = table("input", "labels", "scores")
    for given, prediction in zip(inputs, predictions, strict=True):
        top = sorted(prediction.scores.items(), key=lambda item: -item[1])
        added = set(prediction.added_by_min_labels)
        rows.add_row(
            given if len(given) <= 60 else given[:57] + "...",
            ", ".join(label + ("*" if label in added else "") for label in prediction.labels) or "-",
            "  ".join(f"{label} {score:.3f}" for label, score in top),
        )
    if any(prediction.added_by_min_labels for prediction in predictions):
        rows.caption = "* added by min_labels (below its threshold)"
    console().print(rows)


def predict(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    inputs: Annotated[list[str], typer.Argument(help="Texts, or paths of image files.")],
    threshold: Annotated[
        float | None, typer.Option(min=0, max=1, help="One threshold for every label instead of the model's.")
    ] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Only the k best labels.")] = None,
    min_labels: Annotated[
        int | None, typer.Option(min=0, help="At least this many labels (default: the model's).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Predict labels: an argument that is an existing image file is sent as an image, else as text."""
    values = [_as_input(value) for value in inputs]
    with connected(url, api_key) as client:
        predictions = client.models.predict(
            model_id, values, threshold=threshold, top_k=top_k, min_labels=min_labels
        )
    if json_output:
        print_json(predictions)
    else:
        show_predictions(inputs, predictions)


@app.command("delete")
def delete(model_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Delete a model and its files (the job that trained it stays)."""
    with connected(url, api_key) as client:
        client.models.delete(model_id)
    typer.echo(f"deleted model {model_id}")
