"""`aplserve jobs create|list|get|watch|cancel|metrics`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aplserve.client import DEFAULT_URL, Client, Job, MetricPoint
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

app = typer.Typer(help="Submit, follow and cancel training jobs.", no_args_is_help=True)

LOSS_HELP = "Loss parameter (default: the loss preset's value)."
HP = "Hyperparameters"
LOSS = "Loss"


def _progress(job: Job) -> str:
    p = job.progress
    return f"{p.epoch}/{p.epochs}" + (f" ({p.step}/{p.steps} steps)" if p.steps else "")


def show_job(job: Job) -> None:
    out = console()
    spec = job.spec
    out.print(f"job [bold]{job.id}[/bold]: {job.status}", highlight=False)
    out.print(f"  dataset {spec.dataset_id}, base model {spec.base_model}", highlight=False)
    loss_params = ", ".join(f"{k}={v}" for k, v in spec.loss.items() if k != "name")
    out.print(f"  loss {spec.loss.get('name')} ({loss_params})", highlight=False)
    out.print(f"  progress: epoch {_progress(job)}", highlight=False)
    if job.queue_position is not None:
        out.print(f"  queue position: {job.queue_position}", highlight=False)
    if job.best_metrics:
        best = {k: v for k, v in job.best_metrics.items() if isinstance(v, int | float)}
        out.print(
            "  best: " + ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in best.items())
        )
    test = (job.best_metrics or {}).get("test")
    if isinstance(test, dict):
        scores = ", ".join(f"{k}={fmt(test[k])}" for k in ("map", "macro_f1", "micro_f1") if k in test)
        out.print(f"  test split ({test.get('num_samples')} samples): {scores}", highlight=False)
    if job.model_id:
        out.print(f"  model: {job.model_id}", highlight=False)
    if job.error:
        out.print(f"  [red]error[/red] {job.error.code}: {job.error.message}", highlight=False)
    if job.cancel_requested and not job.finished:
        out.print("  cancel requested; stops within one training step", highlight=False)


def show_metrics(points: list[MetricPoint]) -> None:
    rows = table("epoch", "step", "train loss", "val loss", "mAP", "micro-F1", "macro-F1", "time s")
    for p in points:
        rows.add_row(
            str(p.epoch),
            str(p.step),
            fmt(p.train_loss, 4),
            fmt(p.val_loss, 4),
            fmt(p.map),
            fmt(p.micro_f1),
            fmt(p.macro_f1),
            fmt(p.time_s, 1),
        )
    console().print(rows)


def _watch(client: Client, job_id: str, timeout: float | None, json_output: bool) -> None:
    job = client.jobs.wait(job_id, timeout=timeout, progress=True)
    if json_output:
        print_json(job)
    else:
        show_job(job)
        points = client.jobs.metrics(job_id)
        if points:
            show_metrics(points)
    if job.status != "succeeded":
        raise typer.Exit(1)


@app.command("create")
def create(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset id.")],
    model: Annotated[str, typer.Option("--model", help="Base model: a name, timm:<arch> or hf:<path>.")],
    loss: Annotated[str, typer.Option("--loss", help="bce, focal, asl or apl.")] = "apl",
    epochs: Annotated[int | None, typer.Option(min=1, rich_help_panel=HP)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, rich_help_panel=HP)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.", rich_help_panel=HP)] = None,
    weight_decay: Annotated[float | None, typer.Option(rich_help_panel=HP)] = None,
    val_fraction: Annotated[float | None, typer.Option(rich_help_panel=HP)] = None,
    seed: Annotated[int | None, typer.Option(min=0, rich_help_panel=HP)] = None,
    max_length: Annotated[int | None, typer.Option(help="Text tokens.", rich_help_panel=HP)] = None,
    image_size: Annotated[int | None, typer.Option(help="Image pixels.", rich_help_panel=HP)] = None,
    alpha1: Annotated[float | None, typer.Option(help=LOSS_HELP, rich_help_panel=LOSS)] = None,
    alpha2: Annotated[float | None, typer.Option(help=LOSS_HELP, rich_help_panel=LOSS)] = None,
    beta: Annotated[float | None, typer.Option(help=LOSS_HELP, rich_help_panel=LOSS)] = None,
    gamma_pos: Annotated[float | None, typer.Option(help=LOSS_HELP, rich_help_panel=LOSS)] = None,
    gamma_neg: Annotated[float | None, typer.Option(help=LOSS_HELP, rich_help_panel=LOSS)] = None,
    clip: Annotated[float | None, typer.Option(help=LOSS_HELP, rich_help_panel=LOSS)] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="POSTed the job (signed) when it ends; see `aplserve webhooks secret`.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Retrying with the same key returns the first job instead of a new one."),
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Hold out this fraction as a test split, scored once at the end.")
    ] = None,
    test_dataset: Annotated[
        str | None, typer.Option("--test-dataset", help="Score the end result on this dataset instead.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Queue a training job; prints it (the id is what `jobs watch` needs)."""
    hyperparameters: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "weight_decay": weight_decay,
        "val_fraction": val_fraction,
        "seed": seed,
        "max_length": max_length,
        "image_size": image_size,
    }
    loss_params = {
        "alpha1": alpha1,
        "alpha2": alpha2,
        "beta": beta,
        "gamma_pos": gamma_pos,
        "gamma_neg": gamma_neg,
        "clip": clip,
    }
    with connected(url, api_key) as client:
        job = client.jobs.create(
            dataset,
            model,
            loss=loss,
            loss_params=loss_params,
            hyperparameters=hyperparameters,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
            test_fraction=test_fraction,
            test_dataset_id=test_dataset,
        )
        if watch:
            if not json_output:
                console().print(f"queued job [bold]{job.id}[/bold]", highlight=False)
            _watch(client, job.id, None, json_output)
            return
    print_json(job) if json_output else show_job(job)


@app.command("list")
def list_jobs(
    status: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: queued, running, succeeded, failed, cancelled."),
    ] = None,
    limit: LimitOption = 20,
    every: AllOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your jobs, newest first."""
    with connected(url, api_key) as client:
        items = (
            list(client.jobs.iterate(status=status))
            if every
            else client.jobs.list(status=status, limit=limit).items
        )
    if json_output:
        print_json(items)
        return
    rows = table("id", "status", "base model", "loss", "epoch", "best mAP", "model", "created")
    for job in items:
        best = (job.best_metrics or {}).get("map")
        rows.add_row(
            job.id,
            job.status,
            job.spec.base_model,
            str(job.spec.loss.get("name")),
            _progress(job),
            fmt(best) if isinstance(best, float) else "-",
            job.model_id or "-",
            when(job.created_at),
        )
    console().print(rows)


@app.command("get")
def get(
    job_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One job: status, progress, best metrics, model or error."""
    with connected(url, api_key) as client:
        job = client.jobs.get(job_id)
    print_json(job) if json_output else show_job(job)


@app.command("watch")
def watch_job(
    job_id: str,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Follow a job live (progress bar of epochs with the latest metrics) until it ends.

    Exit code 0 when it succeeded, 1 when it failed, was cancelled or timed out.
    """
    with connected(url, api_key) as client:
        _watch(client, job_id, timeout, json_output)


@app.command("cancel")
def cancel(
    job_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """Cancel a job: a queued one ends at once, a running one within one training step."""
    with connected(url, api_key) as client:
        job = client.jobs.cancel(job_id)
    print_json(job) if json_output else show_job(job)


@app.command("metrics")
def metrics(
    job_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """The job's evaluations so far, one row per epoch."""
    with connected(url, api_key) as client:
        points = client.jobs.metrics(job_id)
    print_json(points) if json_output else show_metrics(points)
