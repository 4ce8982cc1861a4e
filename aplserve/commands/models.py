"""`aplserve models list|get|download|delete` and `aplserve predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aplserve.client import Model, Prediction
from aplserve.commands.common import (
    AllOption,
    CompactTable,
    JsonOption,
    KeyOption,
    LimitOption,
    UrlOption,
    WideOption,
    YesOption,
    confirm_or_refuse,
    connected,
    console,
    fail,
    fmt,
    print_json,
    short,
    show,
    table,
    when,
)
from aplserve.commands.jobs import short_base_model

app = typer.Typer(help="Trained models: list, inspect, download, delete.", no_args_is_help=True)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
#: Scores shown per prediction in the table (all of them with --wide or --json).
TOP_SCORES = 3
ModelId = Annotated[str, typer.Argument(help="Model id, or its first 6+ characters.", show_default=False)]


def _metric(model: Model, name: str) -> str:
    value = model.metrics.get(name)
    return fmt(value) if isinstance(value, float) else "-"


def _origin_lines(model: Model) -> list[str]:
    """Where the model came from: its dataset, loss and sweep (what tells it from the others)."""
    dataset = f"{model.dataset_name} ({short(model.dataset_id)})" if model.dataset_id else "(deleted)"
    lines = [f"  dataset {dataset}, loss {model.loss or '-'}"]
    if model.sweep_id:
        lines.append(f"  sweep {model.sweep_id}" + (f" ({model.role})" if model.role else ""))
    return lines


def show_model(model: Model) -> None:
    out = console()
    named = f" '{model.name}'" if model.name else ""
    out.print(f"model [bold]{model.id}[/bold]{named} ({model.modality}, {model.base_model})", highlight=False)
    out.print(f"  job {model.job_id}, created {when(model.created_at)}", highlight=False)
    for line in _origin_lines(model):
        out.print(line, highlight=False)
    if model.kind != "fine_tuned":
        out.print(f"  kind: {model.kind} (frozen base model + logistic-regression head)", highlight=False)
    if model.comparison:
        out.print(f"  baselines: {model.comparison}", highlight=False)
    for warning in model.warnings:
        out.print(f"  [yellow]warning[/yellow] {warning}", highlight=False)
    out.print(
        f"  validation split: mAP {_metric(model, 'map')}, micro-F1 {_metric(model, 'micro_f1')}, "
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


def model_role(model: Model) -> str:
    """The model's part: its job's sweep role (trial, replicate) and "probe" for a linear probe."""
    parts = [model.role] if model.role else []
    if model.kind == "linear_probe":
        parts.append("probe")
    return " ".join(parts)


def models_table(items: list[Model], wide: bool, *, filtered: tuple[str, ...] = ()) -> CompactTable:
    """Name, dataset, loss, role and sweep first: what tells one model from the next at 80 columns.

    The role and sweep columns are there when a model on the page has one (always with --wide),
    a column the list was filtered on is left out (every row would say the same), names wrap
    rather than lose their end, and when the line is still too short the base model goes (a
    sweep's models share theirs; --wide shows it).
    """
    columns = ["id", "name", "dataset", "loss", "role", "sweep", "base model", "mAP", "created"]
    if wide:
        columns[-1:-1] = ["modality", "labels", "micro-F1", "job"]
    else:
        hidden = set(filtered)
        hidden |= set() if any(model_role(m) for m in items) else {"role"}
        hidden |= set() if any(m.sweep_id for m in items) else {"sweep"}
        columns = [column for column in columns if column not in hidden]
    rows = table(
        *columns,
        flexible=() if wide else ("base model",),
        wrap=() if wide else [column for column in ("name", "dataset") if column in columns],
        optional=() if wide else ("base model",),
    )
    for m in items:
        cells = {
            "id": short(m.id, wide),
            "name": m.name or "-",
            "dataset": m.dataset_name or short(m.dataset_id, wide),
            "loss": m.loss or "-",
            "role": model_role(m) or "-",
            "sweep": short(m.sweep_id, wide),
            "base model": m.base_model if wide else short_base_model(m.base_model),
            "mAP": _metric(m, "map"),
            "modality": m.modality,
            "labels": str(len(m.labels)),
            "micro-F1": _metric(m, "micro_f1"),
            "job": short(m.job_id, wide),
            "created": when(m.created_at, seconds=wide),
        }
        rows.add_row(*(cells[column] for column in columns))
    if items:
        rows.caption = "mAP: each model's best, on its validation split"
    return rows


@app.command("list")
def list_models(
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Only models trained on this dataset (id or 6+ characters)."),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="Only models made by this sweep's jobs (id or 6+ characters)."),
    ] = None,
    limit: LimitOption = 20,
    every: AllOption = False,
    wide: WideOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your trained models, newest first, with the name, dataset, loss and sweep that tell them apart."""
    with connected(url, api_key) as client:
        dataset_id = client.datasets.resolve(dataset) if dataset else None
        sweep_id = client.sweeps.resolve(sweep) if sweep else None
        found = {"dataset_id": dataset_id, "sweep_id": sweep_id}
        items = (
            list(client.models.iterate(**found)) if every else client.models.list(limit=limit, **found).items
        )
    if json_output:
        print_json(items)
        return
    filtered = tuple(column for column, given in (("dataset", dataset), ("sweep", sweep)) if given)
    show(models_table(items, wide, filtered=filtered), wide)


@app.command("rename")
def rename(
    model_id: ModelId,
    name: Annotated[str | None, typer.Argument(help="The new name (quote it if it has spaces).")] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove your name: the job's name shows again.")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Name a model (shown in every list), or with --clear give it back its job's name."""
    if (name is None) == (not clear):
        fail("give a NAME, or --clear to remove the model's name (not both)", "invalid_option")
    with connected(url, api_key) as client:
        model = client.models.rename(client.models.resolve(model_id), None if clear else name)
    if json_output:
        print_json(model)
    else:
        typer.echo(
            f"model {model.id} is now named {model.name!r}" if model.name else f"model {model.id} has no name"
        )


@app.command("get")
def get(
    model_id: ModelId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One model with its labels and decision thresholds."""
    with connected(url, api_key) as client:
        model = client.models.get(client.models.resolve(model_id))
    print_json(model) if json_output else show_model(model)


@app.command("label-issues")
def label_issues(
    model_id: ModelId,
    limit: LimitOption = 20,
    every: AllOption = False,
    wide: WideOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Suspect labels: the model's validation samples ranked by label quality, most suspect first.

    Only validation samples are checked (cleanlab needs out-of-sample probabilities). "model says"
    lists the labels the model decides the other way: +label it would add, -label it would remove.
    """
    with connected(url, api_key) as client:
        resolved = client.models.resolve(model_id)
        if every:
            items = list(client.models.iterate_label_issues(resolved))
            total, flagged = len(items), sum(1 for item in items if item.flagged)
        else:
            page = client.models.label_issues(resolved, limit=limit)
            items, total, flagged = page.items, page.num_samples, page.num_flagged
    if json_output:
        print_json(items)
        return
    rows = table(
        "rank", "sample", "score", "flagged", "given", "model says",
        wrap=("sample", "given", "model says"), optional=("flagged", "score"),
    )  # fmt: skip
    for item in items:
        sample = item.text if item.text is not None else (item.image or "-")
        says = " ".join(f"{'-' if d['given'] else '+'}{d['label']}" for d in item.disagreements)
        rows.add_row(
            str(item.rank),
            sample,
            f"{item.score:.3f}",
            "yes" if item.flagged else "",
            "|".join(item.given_labels) or "-",
            says or "-",
        )
    show(rows, wide)
    console().print(f"{flagged} of {total} validation samples flagged by cleanlab", highlight=False)


@app.command("download")
def download(
    model_id: ModelId,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File or existing directory (default: here).")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Download the model's artifact (safetensors + JSON); its SHA-256 is checked."""
    with connected(url, api_key) as client:
        path = client.models.download(client.models.resolve(model_id), output, progress=True)
    typer.echo(str(path))


def _as_input(value: str, as_text: bool) -> str | Path:
    """An argument naming an image file is that image; anything else is a text.

    A name ending in an image suffix that is not a file is refused rather than sent as
    a text: it is far more often a mistyped path than a text to classify.
    """
    if as_text:
        return value
    path = Path(value)
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES and "\n" not in value:
            if path.is_file():
                return path
            fail(f"no image file {value!r}; to classify it as a text, pass --text", "file_not_found")
    except OSError:  # a long text is not a valid path on every system
        pass
    return value


def _inputs(values: list[str], as_text: bool) -> list[str | Path]:
    """Texts or image files, not both: a model takes one kind."""
    parsed = [_as_input(value, as_text) for value in values]
    images = [str(item) for item in parsed if isinstance(item, Path)]
    texts = [item for item in parsed if isinstance(item, str)]
    if images and texts:
        fail(
            f"give either texts or image files, not both: {images[0]!r} is an image file and {texts[0]!r} "
            "is not (a model takes one kind; use --text to send everything as text)",
            "mixed_inputs",
        )
    return parsed


def show_predictions(inputs: list[str], predictions: list[Prediction], wide: bool = False) -> None:
    """A table; a label marked * is there only because of min_labels (below its threshold)."""
    scores = "scores" if wide else "top scores"
    rows = table("input", "labels", scores, wrap=("input", "labels"), flexible=(scores,))
    for given, prediction in zip(inputs, predictions, strict=True):
        top = sorted(prediction.scores.items(), key=lambda item: -item[1])
        shown = top if wide else top[:TOP_SCORES]
        added = set(prediction.added_by_min_labels)
        rows.add_row(
            given,
            ", ".join(label + ("*" if label in added else "") for label in prediction.labels) or "-",
            "  ".join(f"{label} {score:.3f}" for label, score in shown),
        )
    if any(prediction.added_by_min_labels for prediction in predictions):
        rows.caption = "* added by min_labels (below its threshold)"
    show(rows, wide)


def predict(
    model_id: ModelId,
    inputs: Annotated[list[str], typer.Argument(help="Texts, or paths of image files.")],
    threshold: Annotated[
        float | None, typer.Option(min=0, max=1, help="One threshold for every label instead of the model's.")
    ] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Only the k best labels.")] = None,
    min_labels: Annotated[
        int | None, typer.Option(min=0, help="At least this many labels (default: the model's).")
    ] = None,
    as_text: Annotated[
        bool, typer.Option("--text", help="Send every input as a text, even file names.")
    ] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every label's score, not the best 3.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Predict labels: an argument that is an image file is sent as an image, anything else as a text."""
    values = _inputs(inputs, as_text)
    with connected(url, api_key) as client:
        resolved = client.models.resolve(model_id)
        predictions = client.models.predict(
            resolved, values, threshold=threshold, top_k=top_k, min_labels=min_labels
        )
    if json_output:
        print_json(predictions)
    else:
        show_predictions(inputs, predictions, wide)


@app.command("delete")
def delete(
    model_id: ModelId, yes: YesOption = False, url: UrlOption = None, api_key: KeyOption = None
) -> None:
    """Delete a model and its files (the job that trained it stays); asks first."""
    with connected(url, api_key) as client:
        model = client.models.get(client.models.resolve(model_id))
        confirm_or_refuse(f"Delete model {model.id} ({model.base_model}, {len(model.labels)} labels)?", yes)
        client.models.delete(model.id)
    typer.echo(f"deleted model {model.id}")
