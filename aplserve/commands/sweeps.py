"""`aplserve sweeps create|list|get|watch|leaderboard|trials|cancel`: the loss tournament."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aplserve.client import Client, Leaderboard, Sweep
from aplserve.commands.common import (
    AllOption,
    JsonOption,
    KeyOption,
    LimitOption,
    UrlOption,
    WideOption,
    connected,
    console,
    fmt,
    print_json,
    short,
    show,
    table,
    when,
)
from core.jobs.status import JobStatus

app = typer.Typer(
    help="Compare losses on your data: a sweep of candidate losses x seeds.", no_args_is_help=True
)

SweepId = Annotated[str, typer.Argument(help="Sweep id, or its first 6+ characters.", show_default=False)]
HP = "Hyperparameters (shared by every child)"
CANDIDATE_HELP = (
    "A candidate loss: a preset (bce, focal, asl, apl) or preset:param=value,... "
    "e.g. asl:gamma_neg=2,clip=0.1. Repeat for each; default: the four presets."
)


def parse_candidate(text: str) -> dict[str, Any]:
    """`asl:gamma_neg=2,clip=0.1` -> {"name": "asl", "gamma_neg": 2.0, "clip": 0.1}."""
    name, _, params = text.partition(":")
    candidate: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (part.strip() for part in params.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"'{item}' is not param=value", param_hint="--candidate")
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            candidate[key.strip()] = lowered == "true"
            continue
        try:
            candidate[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"'{value}' is not a number", param_hint="--candidate") from None
    return candidate


def verdict_words(board: Leaderboard) -> str:
    """The verdict as a sentence."""
    if board.verdict == "winner" and board.winner is not None:
        lo, hi = board.winner.delta_ci95
        return (
            f"winner: {board.rows[0].label}, better than {board.rows[1].label} by "
            f"{board.winner.delta:+.3f} test {board.metric} (95% interval {lo:+.3f} to {hi:+.3f})"
        )
    if board.verdict == "no_clear_winner":
        if board.comparison is None:
            return "no clear winner (nothing to compare)"
        lo, hi = board.comparison.delta_ci95
        return (
            f"no clear winner: {board.rows[0].label} leads {board.rows[1].label} by "
            f"{board.comparison.delta:+.3f} test {board.metric}, but the 95% interval "
            f"{lo:+.3f} to {hi:+.3f} includes 0"
        )
    return f"incomplete: no verdict yet (sweep {board.status})"


def show_sweep(sweep: Sweep) -> None:
    out = console()
    spec = sweep.spec
    out.print(f"sweep [bold]{sweep.id}[/bold]: {sweep.status}", highlight=False)
    out.print(f"  dataset {spec.get('dataset_id')}, base model {spec.get('base_model')}", highlight=False)
    names = ", ".join(str(c.get("name")) for c in spec.get("candidates", []))
    test = spec.get("test_dataset_id") or f"{spec.get('test_fraction')} of the dataset"
    out.print(f"  candidates {names}; seeds {spec.get('seeds')}; test split {test}", highlight=False)
    p = sweep.progress
    out.print(
        f"  jobs: {p.total} ({p.queued} queued, {p.running} running, {p.succeeded} succeeded, "
        f"{p.failed} failed, {p.cancelled} cancelled)",
        highlight=False,
    )
    if sweep.trials is not None:
        t = sweep.trials
        out.print(
            f"  search ({sweep.phase}): {t.done}/{t.total} trials done "
            f"({t.pruned} pruned, {t.failed} failed, {t.running} running)",
            highlight=False,
        )
    if sweep.winner:
        name, model_id = sweep.winner.candidate.get("name"), sweep.winner.model_id or "-"
        out.print(f"  winner {name}; recommended model {model_id}", highlight=False)
    if sweep.error:
        out.print(f"  [red]error[/red] {sweep.error.code}: {sweep.error.message}", highlight=False)
    if sweep.cancel_requested and not sweep.finished:
        out.print("  cancel requested; running children stop within one training step", highlight=False)


def _config_words(config: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def show_leaderboard(board: Leaderboard) -> None:
    searched = any(row.config for row in board.rows)
    extra = ("chosen configuration", "search value") if searched else ()
    rows = table("#", "candidate", "n", f"mean {board.metric}", "sd", "95% interval", "per seed", *extra)
    for rank, row in enumerate(board.rows, start=1):
        interval = f"{row.ci95[0]:.3f} .. {row.ci95[1]:.3f}" if row.ci95 else "-"
        seeds = "  ".join(f"{p.seed}:{p.value:.3f}" for p in row.per_seed) or "-"
        chosen = (_config_words(row.config) or "-", fmt(row.search_value)) if searched else ()
        rows.add_row(str(rank), row.label, str(row.n), fmt(row.mean), fmt(row.sd), interval, seeds, *chosen)
    for baseline in board.baseline_rows:
        interval = f"{baseline.ci95[0]:.3f} .. {baseline.ci95[1]:.3f}" if baseline.ci95 else "-"
        seeds = "  ".join(f"{p.seed}:{p.value:.3f}" for p in baseline.per_seed) or "-"
        none = ("-", "-") if searched else ()
        stats = (str(baseline.n), fmt(baseline.mean), fmt(baseline.sd), interval, seeds)
        rows.add_row("-", baseline.label, *stats, *none)
    out = console()
    out.print(rows)
    out.print(verdict_words(board), highlight=False)
    if board.winner is not None:
        out.print(f"recommended model: {board.winner.model_id or '- (deleted)'}", highlight=False)
    out.print(f"[dim]{board.method}[/dim]", highlight=False)


def _watch(client: Client, sweep_id: str, timeout: float | None, json_output: bool) -> None:
    sweep = client.sweeps.wait(sweep_id, timeout=timeout, progress=True)
    board = client.sweeps.leaderboard(sweep_id)
    if json_output:
        print_json({"sweep": sweep.model_dump(mode="json"), "leaderboard": board.model_dump(mode="json")})
    else:
        show_sweep(sweep)
        show_leaderboard(board)
    if sweep.status != JobStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command("create")
def create(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset id, or its first 6+ characters.")],
    model: Annotated[str, typer.Option("--model", help="Base model: a name, timm:<arch> or hf:<path>.")],
    candidate: Annotated[list[str] | None, typer.Option("--candidate", "-c", help=CANDIDATE_HELP)] = None,
    seed: Annotated[
        list[int] | None, typer.Option("--seed", min=0, help="A seed; repeat. Default 0 1 2.")
    ] = None,
    test_fraction: Annotated[float | None, typer.Option(help="Held-out test fraction (default 0.2).")] = None,
    test_dataset: Annotated[
        str | None, typer.Option("--test-dataset", help="Score on this dataset instead (same labels).")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="map (default), macro_f1 or micro_f1.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, rich_help_panel=HP)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, rich_help_panel=HP)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.", rich_help_panel=HP)] = None,
    max_length: Annotated[int | None, typer.Option(help="Text tokens.", rich_help_panel=HP)] = None,
    image_size: Annotated[int | None, typer.Option(help="Image pixels.", rich_help_panel=HP)] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key returns the first sweep.")
    ] = None,
    search_trials: Annotated[
        int | None,
        typer.Option(
            "--search-trials",
            min=1,
            max=64,
            help="Tune each candidate first: N Optuna trials in the base model's space, then its best "
            "configuration on every seed.",
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the children until the sweep ends.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Start a sweep: one job per candidate and seed, each scored once on the same test split."""
    hyperparameters = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "max_length": max_length,
        "image_size": image_size,
    }
    candidates = [parse_candidate(text) for text in candidate] if candidate else None
    with connected(url, api_key) as client:
        sweep = client.sweeps.create(
            client.datasets.resolve(dataset),
            model,
            candidates=candidates,
            seeds=seed or None,
            hyperparameters=hyperparameters,
            test_fraction=test_fraction,
            test_dataset_id=client.datasets.resolve(test_dataset) if test_dataset else None,
            metric=metric,
            idempotency_key=idempotency_key,
            search={"trials": search_trials} if search_trials else None,
        )
        if watch:
            if not json_output:
                console().print(
                    f"started sweep [bold]{sweep.id}[/bold] ({len(sweep.job_ids)} jobs)", highlight=False
                )
            _watch(client, sweep.id, None, json_output)
            return
    print_json(sweep) if json_output else show_sweep(sweep)


@app.command("list")
def list_sweeps(
    limit: LimitOption = 20,
    every: AllOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Your sweeps, newest first (8-character ids: every command takes them)."""
    with connected(url, api_key) as client:
        items = list(client.sweeps.iterate()) if every else client.sweeps.list(limit=limit).items
    if json_output:
        print_json(items)
        return
    rows = table(
        "id", "status", "base model", "candidates", "seeds", "ended", "winner", "created",
        flexible=() if wide else ("base model", "candidates"),
    )  # fmt: skip
    for sweep in items:
        names = ",".join(str(c.get("name")) for c in sweep.spec.get("candidates", []))
        winner = str(sweep.winner.candidate.get("name")) if sweep.winner else "-"
        ended = f"{sweep.progress.ended}/{sweep.progress.total}"
        seeds = ",".join(str(s) for s in sweep.spec.get("seeds", []))
        rows.add_row(
            short(sweep.id, wide),
            sweep.status,
            str(sweep.spec.get("base_model")),
            names,
            seeds,
            ended,
            winner,
            when(sweep.created_at, seconds=wide),
        )
    show(rows, wide)


@app.command("get")
def get(
    sweep_id: SweepId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """One sweep: status, children, winner or error."""
    with connected(url, api_key) as client:
        sweep = client.sweeps.get(client.sweeps.resolve(sweep_id))
    print_json(sweep) if json_output else show_sweep(sweep)


@app.command("watch")
def watch_sweep(
    sweep_id: SweepId,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Follow a sweep's children live, then print its leaderboard. Exit 0 only when it succeeded."""
    with connected(url, api_key) as client:
        _watch(client, client.sweeps.resolve(sweep_id), timeout, json_output)


@app.command("leaderboard")
def leaderboard(
    sweep_id: SweepId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """Per candidate: mean, sd and 95% interval of the test metric over seeds, and the verdict."""
    with connected(url, api_key) as client:
        board = client.sweeps.leaderboard(client.sweeps.resolve(sweep_id))
    print_json(board) if json_output else show_leaderboard(board)


@app.command("trials")
def trials(
    sweep_id: SweepId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """A search sweep's trials: candidate, params, state, validation value per epoch."""
    with connected(url, api_key) as client:
        items = client.sweeps.trials(client.sweeps.resolve(sweep_id))
    if json_output:
        print_json([t.model_dump(mode="json") for t in items])
        return
    rows = table("candidate", "#", "state", "value", "per epoch", "params", "job")
    for t in items:
        epochs = " ".join(f"{v:.3f}" for v in t.values) or "-"
        name = str(t.candidate.get("name"))
        rows.add_row(
            name, str(t.number), t.state, fmt(t.value), epochs, _config_words(t.params), short(t.job_id)
        )
    console().print(rows)


@app.command("cancel")
def cancel(
    sweep_id: SweepId, url: UrlOption = None, api_key: KeyOption = None, json_output: JsonOption = False
) -> None:
    """Cancel every child that has not ended."""
    with connected(url, api_key) as client:
        sweep = client.sweeps.cancel(client.sweeps.resolve(sweep_id))
    print_json(sweep) if json_output else show_sweep(sweep)
