"""`aplserve jobs create|list|get|watch|cancel|metrics|events|checkpoints`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aplserve.client import Checkpoint, Client, HistoryEvent, Job, MetricPoint
from aplserve.commands.common import (
    AllOption,
    CompactTable,
    JsonOption,
    KeyOption,
    LimitOption,
    QuietOption,
    UrlOption,
    WideOption,
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
from core.jobs.status import JobStatus

app = typer.Typer(help="Submit, follow and cancel training jobs.", no_args_is_help=True)

LOSS_HELP = "Loss parameter (default: the loss preset's value)."
HP = "Hyperparameters"
LOSS = "Loss"
DECISION = "Decision"
CALIBRATION_HELP = "auto (default), platt, isotonic, temperature or none."
JobId = Annotated[str, typer.Argument(help="Job id, or its first 6+ characters.", show_default=False)]
#: Base-model names longer than this are shortened in tables (hf: paths mostly).
BASE_MODEL_CHARS = 18


def _progress(job: Job) -> str:
    p = job.progress
    return f"{p.epoch}/{p.epochs}" + (f" ({p.step}/{p.steps} steps)" if p.steps else "")


def short_base_model(name: str) -> str:
    """`hf:/long/path/to/tiny-bert` -> `hf:…/tiny-bert`; built-in names stay as they are."""
    if len(name) <= BASE_MODEL_CHARS:
        return name
    kind, _, ref = name.partition(":")
    tail = ref.rstrip("/").rsplit("/", 1)[-1] if ref else name
    shortened = f"{kind}:…/{tail}" if ref else tail
    return shortened if len(shortened) <= BASE_MODEL_CHARS else shortened[: BASE_MODEL_CHARS - 1] + "…"


def show_job(job: Job) -> None:
    out = console()
    spec = job.spec
    named = f" '{job.name}'" if job.name else ""
    out.print(f"job [bold]{job.id}[/bold]{named}: {job.status}", highlight=False)
    if job.metadata:
        out.print("  metadata: " + ", ".join(f"{k}={v}" for k, v in job.metadata.items()), highlight=False)
    out.print(f"  dataset {spec.dataset_id}, base model {spec.base_model}", highlight=False)
    loss_params = ", ".join(f"{k}={v}" for k, v in spec.loss.items() if k != "name")
    out.print(f"  loss {spec.loss.get('name')} ({loss_params})", highlight=False)
    if job.sweep_id:
        role = f" ({job.role})" if job.role else ""
        out.print(f"  sweep {job.sweep_id}{role}", highlight=False)
    out.print(f"  progress: epoch {_progress(job)}", highlight=False)
    if job.queue_position is not None:
        out.print(f"  queue position: {job.queue_position}", highlight=False)
    if job.best_metrics:
        numbers = {k: v for k, v in job.best_metrics.items() if type(v) in (int, float)}
        shown = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in numbers.items())
        label = "best so far (validation)" if _best_map(job).endswith("so far") else "best (validation)"
        out.print(f"  {label}: {shown}")
    test = (job.best_metrics or {}).get("test")
    if isinstance(test, dict):
        scores = ", ".join(f"{k}={fmt(test[k])}" for k in ("map", "macro_f1", "micro_f1") if k in test)
        out.print(f"  test split ({test.get('num_samples')} samples): {scores}", highlight=False)
    stop = (job.best_metrics or {}).get("stop_message")
    if stop:
        out.print(f"  training ended: {stop}", highlight=False)
    if job.comparison:
        out.print(f"  baselines: {job.comparison}", highlight=False)
    if job.model_id:
        models = (job.best_metrics or {}).get("models") or {}
        also = [f"{kind} {mid}" for kind, mid in models.items() if mid != job.model_id]
        out.print(f"  model: {job.model_id}" + (f" (also published: {', '.join(also)})" if also else ""))
    for warning in job.warnings:
        out.print(f"  [yellow]warning[/yellow] {warning}", highlight=False)
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


def _watch(
    client: Client, job_id: str, timeout: float | None, json_output: bool, quiet: bool = False
) -> None:
    job = client.jobs.wait(job_id, timeout=timeout, progress=not quiet)
    if quiet:
        if job.status != JobStatus.SUCCEEDED:
            error = f": {job.error.code}: {job.error.message}" if job.error else ""
            fail(
                f"job {job.id} ended {job.status}{error}",
                job.error.code if job.error else job.status,
                exit_code=1,
            )
        typer.echo(job.model_id)
        return
    if json_output:
        print_json(job)
    else:
        show_job(job)
        points = client.jobs.metrics(job_id)
        if points:
            show_metrics(points)
    if job.status != JobStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command("create")
def create(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset id, or its first 6+ characters.")],
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
    policy: Annotated[
        str | None,
        typer.Option(help="Thresholds: max_f1, precision_at, recall_at or fixed.", rich_help_panel=DECISION),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(help="The precision/recall to reach, or the fixed threshold.", rich_help_panel=DECISION),
    ] = None,
    min_labels: Annotated[
        int | None, typer.Option(min=0, help="Fewest labels per prediction.", rich_help_panel=DECISION)
    ] = None,
    calibration: Annotated[str | None, typer.Option(help=CALIBRATION_HELP, rich_help_panel=DECISION)] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="POSTed the job (signed) when it ends; see `aplserve webhooks secret`.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Retrying with the same key returns the first job instead of a new one."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Your label for the job.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="KEY=VALUE, kept with the job (repeatable).")
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Hold out this fraction as a test split, scored once at the end.")
    ] = None,
    test_dataset: Annotated[
        str | None, typer.Option("--test-dataset", help="Score the end result on this dataset instead.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    quiet: QuietOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Queue a training job; prints it (the id is what `jobs watch` needs)."""
    pairs = _metadata(metadata or [])
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
            client.datasets.resolve(dataset),
            model,
            loss=loss,
            loss_params=loss_params,
            hyperparameters=hyperparameters,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
            decision={"policy": policy, "target": target, "min_labels": min_labels},
            calibration=calibration,
            name=name,
            metadata=pairs,
            test_fraction=test_fraction,
            test_dataset_id=test_dataset,
        )
        if watch:
            if not json_output and not quiet:
                console().print(f"queued job [bold]{job.id}[/bold]", highlight=False)
            _watch(client, job.id, None, json_output, quiet)
            return
    if quiet:
        typer.echo(job.id)
    else:
        print_json(job) if json_output else show_job(job)


def _metadata(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--metadata takes KEY=VALUE, not {item!r}", "invalid_option")
        pairs[key] = value
    return pairs


def _best_map(job: Job) -> str:
    """The best validation mAP, "0.513 so far" while the job runs."""
    best = (job.best_metrics or {}).get("map")
    if not isinstance(best, float):
        return "-"
    so_far = (job.best_metrics or {}).get("so_far") and not job.finished
    return f"{fmt(best)} so far" if so_far else fmt(best)


def jobs_table(items: list[Job], wide: bool, *, filtered: tuple[str, ...] = ()) -> CompactTable:
    """The job list: a sweep's children are marked by their sweep (and role: trial or replicate).

    Those two columns are there when a job on the page is a sweep child (always with --wide),
    but not the sweep column when the list was filtered on one sweep; at 80 columns the role
    goes first, then the epoch, then the base model (the sweep column still marks the child,
    and a sweep's children share their base model).
    """
    swept = wide or any(job.sweep_id for job in items)
    columns = ["id", "name", "status", "base model", "loss", "sweep", "role", "epoch", "mAP", "created"]
    if not swept:
        columns = [column for column in columns if column not in ("sweep", "role")]
    if wide:
        columns[-2:-2] = ["dataset", "model", "metadata"]
    else:
        columns = [column for column in columns if column not in filtered]
    rows = table(
        *columns,
        flexible=() if wide else ("base model",),
        wrap=() if wide else ("name",),
        optional=() if wide or not swept else ("role", "epoch", "base model"),
    )
    for job in items:
        cells = {
            "id": short(job.id, wide),
            "name": job.name or "-",
            "status": job.status,
            "base model": job.spec.base_model if wide else short_base_model(job.spec.base_model),
            "loss": str(job.spec.loss.get("name")),
            "sweep": short(job.sweep_id, wide),
            "role": job.role or "-",
            "epoch": f"{job.progress.epoch}/{job.progress.epochs}",
            "dataset": short(job.spec.dataset_id, True),
            "model": short(job.model_id, True),
            "metadata": ", ".join(f"{k}={v}" for k, v in job.metadata.items()) or "-",
            "mAP": _best_map(job),
            "created": when(job.created_at, seconds=wide),
        }
        rows.add_row(*(cells[column] for column in columns))
    if items:
        rows.caption = "mAP: the best on each job's validation split (so far, while it runs)"
    return rows


@app.command("list")
def list_jobs(
    status: Annotated[
        str | None,
        typer.Option(help=f"Only jobs in this state: {', '.join(JobStatus)}."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only jobs on this dataset (id or 6+ characters).")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Only this sweep's jobs (id or 6+ characters).")
    ] = None,
    limit: LimitOption = 20,
    every: AllOption = False,
    wide: WideOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your jobs, newest first (8-character ids: every command takes them); a sweep's children
    show their sweep."""
    with connected(url, api_key) as client:
        found = {
            "status": status,
            "dataset_id": client.datasets.resolve(dataset) if dataset else None,
            "sweep_id": client.sweeps.resolve(sweep) if sweep else None,
        }
        items = list(client.jobs.iterate(**found)) if every else client.jobs.list(limit=limit, **found).items
    if json_output:
        print_json(items)
        return
    show(jobs_table(items, wide, filtered=("sweep",) if sweep else ()), wide)


@app.command("get")
def get(
    job_id: JobId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One job: status, progress, best metrics, model or error."""
    with connected(url, api_key) as client:
        job = client.jobs.get(client.jobs.resolve(job_id))
    print_json(job) if json_output else show_job(job)


@app.command("watch")
def watch_job(
    job_id: JobId,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No bar; print only the model id when it succeeds.")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Follow a job live (progress bar of epochs with the latest metrics) until it ends.

    Exit code 0 when it succeeded, 1 when it failed, was cancelled or timed out.
    With --quiet, MODEL=$(aplserve jobs watch JOB -q) waits for the model id.
    """
    with connected(url, api_key) as client:
        _watch(client, client.jobs.resolve(job_id), timeout, json_output, quiet)


@app.command("cancel")
def cancel(
    job_id: JobId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """Cancel a job: a queued one ends at once, a running one within one training step."""
    with connected(url, api_key) as client:
        job = client.jobs.cancel(client.jobs.resolve(job_id))
    print_json(job) if json_output else show_job(job)


@app.command("metrics")
def metrics(
    job_id: JobId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """The job's evaluations so far, one row per epoch."""
    with connected(url, api_key) as client:
        points = client.jobs.metrics(client.jobs.resolve(job_id))
    print_json(points) if json_output else show_metrics(points)


def _event_line(event: HistoryEvent) -> str:
    level = "" if event.level == "info" else f"{event.level}: "
    return f"{when(event.created_at)}  {event.type:<10} {level}{event.message}"


@app.command("events")
def events(
    job_id: JobId,
    after: Annotated[int, typer.Option(min=0, help="Only events after this event id.")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print new events until the job ends.")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """The job's history: status changes, epochs (losses, mAP, F1, samples/s), checkpoints, problems."""
    with connected(url, api_key) as client:
        resolved = client.jobs.resolve(job_id)
        stored = list(client.jobs.history(resolved, after=after))
        _print_events(stored, json_output)
        if follow:
            last = stored[-1].id if stored else after
            for event in client.jobs.events(resolved, last_event_id=str(last) if last else None):
                if event.history is not None:
                    _print_events([event.history], json_output)


def _print_events(items: list[HistoryEvent], json_output: bool) -> None:
    for item in items:
        typer.echo(item.model_dump_json() if json_output else _event_line(item))


@app.command("checkpoints")
def checkpoints(
    job_id: JobId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """The epoch checkpoints the job saved, with each epoch's metrics (only the newest is kept on disk)."""
    with connected(url, api_key) as client:
        items = client.jobs.checkpoints(client.jobs.resolve(job_id))
    if json_output:
        print_json(items)
        return
    show_checkpoints(items)


def show_checkpoints(items: list[Checkpoint]) -> None:
    rows = table("epoch", "step", "train loss", "val loss", "mAP", "micro-F1", "macro-F1", "on disk", "best")
    for c in items:
        m = c.metrics
        rows.add_row(
            str(c.epoch),
            str(c.step if c.step is not None else "-"),
            fmt(m.get("train_loss"), 4),
            fmt(m.get("val_loss"), 4),
            fmt(m.get("map")),
            fmt(m.get("micro_f1")),
            fmt(m.get("macro_f1")),
            "yes" if c.on_disk else "-",
            "yes" if c.best else "-",
        )
    console().print(rows)
