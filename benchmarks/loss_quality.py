"""Which loss wins on the demo data, measured through the running service: docs/results.md.

Starts `aplserve serve` (embedded worker, SQLite) on a fresh data dir, writes the demo
datasets (`aplserve demo-data`), uploads them and runs, per data set and base model, a
sweep of the four presets (bce, focal, asl, apl) x seeds 0, 1, 2 with every
hyperparameter at its default (the base model's, `GET /v1/base-models`), one sweep
after the other. Then it fits the one-vs-rest logistic-regression baseline
(`apl.baseline`) on each seed's own split of the stored dataset, the split the sweep's
children trained and were tested on, and writes:

    docs/loss-quality.json   the sweeps, leaderboards and baselines as measured
    docs/results.md          the part between the loss-quality markers: leaderboard tables
                             (mean, sd, 95% interval, n), the verdict, the baseline, wall time
    docs/loss-quality.png    test mAP per loss with the interval as error bars and the
                             per-seed values as dots, one panel per sweep, baseline as a line

    .venv/bin/python benchmarks/loss_quality.py [--only movies|digits|digits-lite0] [--extra-workers N]
    .venv/bin/python benchmarks/loss_quality.py --render-only
    .venv/bin/python benchmarks/loss_quality.py --search [--only digits] [--trials 6] [--extra-workers 1]

`--search` compares each loss at its defaults with the same loss tuned by a search sweep
(benchmarks/loss_search.py says how).
    .venv/bin/python benchmarks/loss_quality.py --undertagged movies [--seeds 0,1] [--candidates ...]

`--undertagged NAME` runs the tournament with the losses for missing labels and long tails
on the complete and the under-tagged variant of a demo set (`aplserve demo-data --undertagged`,
`aplserve.demo_undertagged`: the same training samples, 40% of their positives removed in
one; both scored on the same complete test set, given as `test_dataset_id`) and writes
docs/loss-quality-undertagged-<name>.json and the part of docs/results.md between that
set's loss-quality-undertagged-<name> markers.

`--render-only` rewrites the report and the plot from docs/loss-quality.json. `--extra-workers`
starts that many more `aplserve worker` processes on the service's data dir, so children
train side by side. On a CPU shared with other work, run it with `OMP_NUM_THREADS=1`: with
torch's default of one thread per core, a job on this loaded 2-core machine took 5.5 min
that took 40 s single-threaded (threads that wait for each other at every operation).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS_MD = DOCS / "results.md"
RESULTS_JSON = DOCS / "loss-quality.json"
RESULTS_PNG = DOCS / "loss-quality.png"
START = "<!-- loss-quality:start (written by benchmarks/loss_quality.py) -->"
END = "<!-- loss-quality:end -->"
#: name -> (demo file, base model)
RUNS: dict[str, tuple[str, str]] = {
    "movies": ("movies-genres.csv", "minilm-l6"),
    "digits": ("digits-mosaics.zip", "mobilenetv2-100"),
    "digits-lite0": ("digits-mosaics.zip", "efficientnet-lite0"),
}
DEFAULT_RUNS = ("movies", "digits")
POLL_S = 5.0


# --- measuring (through the service) -----------------------------------------------------


def run_sweep(
    service: Any, dataset: dict[str, Any], base_model: str, timeout_s: float, **extra: Any
) -> dict[str, Any]:
    """POST a sweep (default but for `extra`), wait for it; return it, its leaderboard and its children."""
    body = {"dataset_id": dataset["id"], "base_model": base_model, **extra}
    response = service.client.post("/v1/sweeps", json=body)
    response.raise_for_status()
    sweep: dict[str, Any] = response.json()
    started = time.monotonic()
    while sweep["status"] in ("queued", "running"):
        if time.monotonic() - started > timeout_s:
            service.client.post(f"/v1/sweeps/{sweep['id']}/cancel")
            raise RuntimeError(f"sweep {sweep['id']} did not finish in {timeout_s:.0f} s; cancelled")
        time.sleep(POLL_S)
        sweep = service.client.get(f"/v1/sweeps/{sweep['id']}").json()
        done = sweep["progress"]["succeeded"] + sweep["progress"]["failed"] + sweep["progress"]["cancelled"]
        print(
            f"  {base_model}: {done}/{sweep['progress']['total']} children ended", file=sys.stderr, flush=True
        )
    board = service.client.get(f"/v1/sweeps/{sweep['id']}/leaderboard").json()
    jobs = service.client.get("/v1/jobs", params={"sweep_id": sweep["id"], "limit": 200}).json()["items"]
    children = [
        {
            "id": job["id"],
            "status": job["status"],
            "loss": job["spec"]["loss"]["name"],
            "seed": job["spec"]["hyperparameters"]["seed"],
            "started_at": job["started_at"],
            "finished_at": job["finished_at"],
            "best_epoch": (job["best_metrics"] or {}).get("epoch"),
        }
        for job in jobs
    ]
    return {"sweep": sweep, "leaderboard": board, "children": children, "wall_s": time.monotonic() - started}


def run_baseline(data_dir: Path, dataset_id: str, sweep_spec: dict[str, Any]) -> dict[str, Any]:
    """The logistic-regression baseline on every seed's split of the sweep, with its t-interval."""
    from apl.baseline import logistic_baseline
    from apl.data import load_stored_dataset
    from apl.stats import t_interval
    from core.files import DataFiles

    dataset = load_stored_dataset(DataFiles(data_dir).dataset(dataset_id))
    val_fraction = float(sweep_spec["hyperparameters"]["val_fraction"])
    per_seed = [
        logistic_baseline(
            dataset, seed=seed, test_fraction=sweep_spec["test_fraction"], val_fraction=val_fraction
        )
        for seed in sweep_spec["seeds"]
    ]
    interval = t_interval([result.test_map for result in per_seed])
    return {
        "features": per_seed[0].features,
        "n": interval.n,
        "mean": interval.mean,
        "sd": interval.sd,
        "ci95": [interval.lo, interval.hi],
        "per_seed": [
            {k: v for k, v in asdict(result).items() if k != "test_indices"} | {"num_test": result.num_test}
            for result in per_seed
        ],
    }


def start_workers(data_dir: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """More `aplserve worker` processes for the service's embedded broker and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
    env |= {"APLSERVE_DATA_DIR": str(data_dir), "APLSERVE_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "aplserve.cli", "worker", "--loglevel", "WARNING"]
    workers = []
    for number in range(count):  # each worker's log beside the service's, for a failed child's cause
        with (data_dir / f"extra-worker-{number}.log").open("ab") as log:
            workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()


@contextlib.contextmanager
def demo_service(prefix: str, extra_workers: int, *, undertagged: bool = False) -> Iterator[tuple[Path, Any]]:
    """A fresh service (and `extra_workers` more workers) on a scratch dir holding the demo data.

    Yields the data dir (`<root>/var`, for `run_baseline`) and the service; the demo data are
    in `<root>/demo`, beside it. Workers and service are stopped however the body ends.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from service_overhead import Service

    from aplserve.demo_data import write_demo_data

    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        root = Path(scratch)
        write_demo_data(root / "demo", undertagged=undertagged)
        service = Service(root / "var")
        workers = start_workers(root / "var", extra_workers)
        try:
            yield root / "var", service
        finally:
            stop_workers(workers)
            service.stop()


def measure(names: list[str], timeout_s: float, extra_workers: int = 0) -> dict[str, Any]:
    """Every requested run through one fresh service; the measured results as one JSON-able dict."""
    runs = []
    with demo_service("aplserve-loss-quality-", extra_workers) as (data_dir, service):
        models = {item["name"]: item for item in service.client.get("/v1/base-models").json()["items"]}
        uploaded: dict[str, dict[str, Any]] = {}
        for name in names:
            filename, base_model = RUNS[name]
            if filename not in uploaded:
                uploaded[filename] = service.upload(data_dir.parent / "demo" / filename)
            dataset = uploaded[filename]
            print(f"{name}: sweep of {base_model} on {filename}", file=sys.stderr, flush=True)
            measured = run_sweep(service, dataset, base_model, timeout_s)
            baseline = run_baseline(data_dir, dataset["id"], measured["sweep"]["spec"])
            runs.append(_run_record(name, filename, dataset, models[base_model], measured, baseline))
            print(json.dumps(runs[-1]["leaderboard"]["rows"][0]["mean"]), file=sys.stderr)
    return {"runs": runs}


def merge(earlier: dict[str, Any] | None, measured: dict[str, Any]) -> dict[str, Any]:
    """The new runs replace earlier ones of the same name; the others are kept, in RUNS order."""
    by_name = {run["name"]: run for run in (earlier or {}).get("runs", [])}
    by_name.update({run["name"]: run for run in measured["runs"]})
    return {"runs": [by_name[name] for name in RUNS if name in by_name]}


def _run_record(
    name: str,
    filename: str,
    dataset: dict[str, Any],
    model: dict[str, Any],
    measured: dict[str, Any],
    baseline: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "data": f"{filename} ({dataset['num_samples']} samples, {len(dataset['labels'])} labels)",
        "base_model": model["name"],
        "defaults": model["defaults"],
        "hyperparameters": measured["sweep"]["spec"]["hyperparameters"],
        "test_fraction": measured["sweep"]["spec"]["test_fraction"],
        "sweep_id": measured["sweep"]["id"],
        "status": measured["sweep"]["status"],
        "wall_s": measured["wall_s"],
        "children": measured["children"],
        "leaderboard": measured["leaderboard"],
        "baseline": baseline,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
    }


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}, "
        f"OMP_NUM_THREADS {threads}, load average {os.getloadavg()[1]:.1f} at the end"
    )


# --- reporting (pure: from the measured dict) --------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"{ci[0]:.3f} .. {ci[1]:.3f}"


def verdict_text(board: dict[str, Any]) -> str:
    """The leaderboard's verdict in one sentence, with the paired difference and its interval."""
    comparison = board.get("comparison") or board.get("winner")
    if board["verdict"] == "incomplete" or comparison is None:
        return f"verdict: {board['verdict']} (no comparison)"
    best, other = _label(comparison["candidate"]), _label(comparison["versus"])
    lo, hi = comparison["delta_ci95"]
    gap = (
        f"{best} leads {other} by {comparison['delta']:+.3f} test {board['metric']} "
        f"(95% interval {lo:+.3f} to {hi:+.3f})"
    )
    if board["verdict"] == "winner":
        return f"**winner: {best}**; {gap}, which excludes 0"
    return f"**no clear winner**: {gap}, which includes 0"


def _label(candidate: dict[str, Any]) -> str:
    return str(candidate.get("name", "?"))


def leaderboard_table(run: dict[str, Any]) -> list[str]:
    """The leaderboard as a markdown table, with each candidate's lead over the baseline."""
    baseline = run["baseline"]["mean"]
    lines = [
        "| # | loss | n | mean test mAP | sd | 95% interval | per seed | vs. baseline |",
        "|---|---|---:|---:|---:|---|---|---:|",
    ]
    for rank, row in enumerate(run["leaderboard"]["rows"], start=1):
        seeds = "  ".join(f"{s['seed']}:{s['value']:.3f}" for s in row["per_seed"])
        lead = "–" if row["mean"] is None or baseline is None else f"{row['mean'] - baseline:+.3f}"
        lines.append(
            f"| {rank} | {row.get('label') or _label(row['candidate'])} | {row['n']} | {_f(row['mean'])} | "
            f"{_f(row['sd'])} | {_interval(row['ci95'])} | {seeds} | {lead} |"
        )
    return lines


def _settings(run: dict[str, Any]) -> str:
    hp = run["hyperparameters"]
    size = f"image size {hp['image_size']}" if "digits" in run["name"] else f"max length {hp['max_length']}"
    return f"{hp['epochs']} epochs, batch {hp['batch_size']}, learning rate {hp['learning_rate']:g}, {size}"


def _children_time(run: dict[str, Any]) -> str:
    seconds = [
        (datetime.fromisoformat(c["finished_at"]) - datetime.fromisoformat(c["started_at"])).total_seconds()
        for c in run["children"]
        if c["started_at"] and c["finished_at"]
    ]
    if not seconds:
        return ""
    seconds.sort()
    return f"; each child {seconds[0]:.0f} to {seconds[-1]:.0f} s (median {seconds[len(seconds) // 2]:.0f} s)"


def run_section(run: dict[str, Any]) -> list[str]:
    base = run["baseline"]
    board = run["leaderboard"]
    lines = [
        f"### {run['data']}, {run['base_model']}",
        "",
        f"Defaults: {_settings(run)}; test split {run['test_fraction']:g} per seed. "
        f"Sweep `{run['sweep_id']}` {run['status']} in {run['wall_s'] / 60:.1f} min "
        f"({len(run['children'])} jobs{_children_time(run)}), "
        f"measured {run['measured_at']} on {run['machine']}.",
        "",
        *leaderboard_table(run),
        "",
        verdict_text(board) + ".",
        "",
        f"Baseline (one-vs-rest logistic regression, {base['features']}, C chosen on validation, the same "
        f"test splits): mean test mAP {_f(base['mean'])}, sd {_f(base['sd'])}, 95% interval "
        f"{_interval(base['ci95'])}, n {base['n']} (per seed "
        + "  ".join(f"{s['seed']}:{s['test_map']:.3f}" for s in base["per_seed"])
        + ").",
        "",
        f"`method`: {board.get('method', '')}",
        "",
    ]
    return lines


def summary_lines(results: dict[str, Any]) -> list[str]:
    """One line per sweep: the winner (or not), where APL ranked, and the margin over the baseline."""
    lines = [
        "| data, base model | verdict | best loss | APL | baseline | best - baseline | APL - baseline |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        rows = run["leaderboard"]["rows"]
        best = rows[0]
        apl = next(
            (row for row in rows if _label(row["candidate"]) == "apl" and row.get("label", "apl") == "apl"),
            None,
        )
        base = run["baseline"]["mean"]
        apl_mean = None if apl is None else apl["mean"]
        lines.append(
            f"| {run['data'].split(' (')[0]}, {run['base_model']} | {run['leaderboard']['verdict']} | "
            f"{_label(best['candidate'])} {_f(best['mean'])} | {_f(apl_mean)} (rank "
            f"{rows.index(apl) + 1 if apl else '–'}) | {_f(base)} | {_delta(best['mean'], base)} | "
            f"{_delta(apl_mean, base)} |"
        )
    return lines


def _delta(value: float | None, base: float | None) -> str:
    return "–" if value is None or base is None else f"{value - base:+.3f}"


def render_markdown(results: dict[str, Any]) -> str:
    """The report's generated part (between the markers of docs/results.md)."""
    lines = [
        START,
        "## Which loss wins: the demo data through the service",
        "",
        "Measured with `.venv/bin/python benchmarks/loss_quality.py` (raw numbers: "
        "[loss-quality.json](loss-quality.json); plot: [loss-quality.png](loss-quality.png)). Every sweep: "
        "the four presets x seeds 0, 1, 2, every hyperparameter at the base model's default, each child "
        "scored once on its seed's held-out test split; the baseline is fitted on the same splits.",
        "",
        *summary_lines(results),
        "",
        "![test mAP per loss](loss-quality.png)",
        "",
    ]
    for run in results["runs"]:
        lines.extend(run_section(run))
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(existing: str, generated: str) -> str:
    """Replace the generated part of the report, keeping everything written by hand around it."""
    if START in existing and END in existing:
        head, rest = existing.split(START, 1)
        tail = rest.split(END, 1)[1]
        return head + generated.rstrip("\n") + tail
    return existing.rstrip("\n") + ("\n\n" if existing.strip() else "") + generated


def plot(results: dict[str, Any], path: Path) -> None:
    """Test mAP per loss: mean with the 95% interval as error bars, seeds as dots, the baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    figure, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.0), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        rows = sorted(run["leaderboard"]["rows"], key=lambda row: _label(row["candidate"]))
        for x, row in enumerate(rows):
            mean, ci = row["mean"], row["ci95"]
            if mean is not None and ci and ci[0] is not None:
                ax.errorbar(x, mean, yerr=[[mean - ci[0]], [ci[1] - mean]], fmt="o", color="C0", capsize=6)
            elif mean is not None:
                ax.plot(x, mean, "o", color="C0")
            values = [seed["value"] for seed in row["per_seed"]]
            ax.plot([x + 0.12] * len(values), values, ".", color="C1", alpha=0.8)
        base = run["baseline"]
        if base["mean"] is not None:
            ax.axhline(
                base["mean"], color="C3", linestyle="--", label=f"logistic regression {base['mean']:.3f}"
            )
            if base["ci95"][0] is not None:
                ax.axhspan(base["ci95"][0], base["ci95"][1], color="C3", alpha=0.1)
        ax.set_xticks(range(len(rows)), [row.get("label") or _label(row["candidate"]) for row in rows])
        ax.set_title(f"{run['data'].split(' (')[0]}\n{run['base_model']}", fontsize=10)
        ax.set_ylabel("test mAP (mean, 95% interval; dots: seeds)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(results: dict[str, Any], md_path: Path, png_path: Path) -> None:
    existing = md_path.read_text(encoding="utf-8") if md_path.exists() else "# Results\n"
    md_path.write_text(splice(existing, render_markdown(results)), encoding="utf-8")
    plot(results, png_path)


# --- the under-tagged comparison -----------------------------------------------------------


def undertagged_json(name: str) -> Path:
    """Each demo set's under-tagged comparison keeps its own raw numbers and its own block."""
    return DOCS / f"loss-quality-undertagged-{name}.json"


def undertagged_markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- loss-quality-undertagged-{name}:start "
        f"(written by benchmarks/loss_quality.py --undertagged {name}) -->",
        f"<!-- loss-quality-undertagged-{name}:end -->",
    )


#: name -> (complete training file, under-tagged training file, complete test file, base model)
UNDERTAGGED_RUNS: dict[str, tuple[str, str, str, str]] = {
    "movies": (
        "movies-genres-train.csv",
        "movies-genres-undertagged.csv",
        "movies-genres-test.csv",
        "minilm-l6",
    ),
    "digits": (
        "digits-mosaics-train.zip",
        "digits-mosaics-undertagged.zip",
        "digits-mosaics-test.zip",
        "mobilenetv2-100",
    ),
}
UNDERTAGGED_CANDIDATES = ("bce", "apl", "hill", "splc", "dbl", "twoway")


def measure_undertagged(
    name: str,
    candidates: list[str],
    seeds: list[int],
    timeout_s: float,
    extra_workers: int,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Both variants of `name` through one fresh service, the same candidates, seeds and test set."""
    complete, undertagged, test, base_model = UNDERTAGGED_RUNS[name]
    variants: dict[str, Any] = {}
    with demo_service("aplserve-undertagged-", extra_workers, undertagged=True) as (data_dir, service):
        demo = data_dir.parent / "demo"
        test_set = service.upload(demo / test)
        spec = {"candidates": [{"name": c} for c in candidates], "seeds": seeds}
        spec |= {"test_fraction": None, "test_dataset_id": test_set["id"]}
        if epochs is not None:  # else the base model's step budget, stopped by evidence
            spec["hyperparameters"] = {"epochs": epochs}
        for variant, filename in (("complete", complete), ("undertagged", undertagged)):
            dataset = service.upload(demo / filename)
            print(f"{name} {variant}: sweep of {base_model} on {filename}", file=sys.stderr, flush=True)
            measured = run_sweep(service, dataset, base_model, timeout_s, **spec)
            variants[variant] = {
                "data": f"{filename} ({dataset['num_samples']} samples, {len(dataset['labels'])} labels)",
                "profile": dataset.get("profile"),
                "test": f"{test} ({test_set['num_samples']} samples, complete)",
                "sweep_id": measured["sweep"]["id"],
                "hyperparameters": measured["sweep"]["spec"]["hyperparameters"],
                "wall_s": measured["wall_s"],
                "children": measured["children"],
                "leaderboard": measured["leaderboard"],
            }
    return {
        "name": name,
        "base_model": base_model,
        "variants": variants,
        "machine": _machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _rows_by_loss(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["candidate"]["name"]: row for row in board["rows"]}


def render_undertagged(result: dict[str, Any]) -> str:
    """The comparison table (complete vs under-tagged per loss) and each variant's verdict."""
    complete = _rows_by_loss(result["variants"]["complete"]["leaderboard"])
    tagged = _rows_by_loss(result["variants"]["undertagged"]["leaderboard"])
    first = result["variants"]["complete"]
    hp = first["hyperparameters"]
    lines = [
        f"## Losses for missing labels and long tails: {result['name']}, complete vs under-tagged",
        "",
        f"Measured with `.venv/bin/python benchmarks/loss_quality.py --undertagged {result['name']}` "
        f"(raw numbers: [{undertagged_json(result['name']).name}]({undertagged_json(result['name']).name})), "
        f"{result['measured_at']} on {result['machine']}. Base model {result['base_model']}, "
        f"{hp['epochs']} epochs, batch {hp['batch_size']}, learning rate {hp['learning_rate']:g}. "
        f"Training data: {first['data']} and its under-tagged copy "
        f"{result['variants']['undertagged']['data']} (40% of the positives removed, one kept per "
        f"sample); both scored on {first['test']}. Test mAP per loss: mean over seeds, 95% "
        "Student-t interval, per seed.",
        "",
        "| loss | complete: mean | 95% interval | under-tagged: mean | 95% interval | change |",
        "|---|---:|---|---:|---|---:|",
    ]
    for loss in sorted(complete, key=lambda k: -(complete[k]["mean"] or 0)):
        a, b = complete[loss], tagged.get(loss, {})
        change = None if a["mean"] is None or b.get("mean") is None else b["mean"] - a["mean"]
        lines.append(
            f"| {loss} | {_f(a['mean'])} | {_interval(a['ci95'])} | {_f(b.get('mean'))} | "
            f"{_interval(b.get('ci95'))} | {'' if change is None else f'{change:+.3f}'} |"
        )
    lines.append("")
    for variant in ("complete", "undertagged"):
        run = result["variants"][variant]
        board = run["leaderboard"]
        per_seed = "; ".join(
            f"{row['candidate']['name']} "
            + " ".join(f"{s['seed']}:{s['value']:.3f}" for s in row["per_seed"])
            for row in board["rows"]
        )
        lines += [
            f"- **{variant}** (sweep `{run['sweep_id']}`, {run['wall_s'] / 60:.1f} min): "
            f"{verdict_text(board).rstrip('.')}. Per seed: {per_seed}.",
        ]
    return "\n".join(lines) + "\n"


def write_undertagged(result: dict[str, Any]) -> None:
    undertagged_json(result["name"]).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    existing = RESULTS_MD.read_text(encoding="utf-8")
    start, end = undertagged_markers(result["name"])
    block = f"{start}\n{render_undertagged(result)}{end}"
    if start in existing:
        head, rest = existing.split(start, 1)
        existing = head + block + rest.split(end, 1)[1]
    else:
        existing = existing.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS_MD.write_text(existing, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--undertagged", choices=sorted(UNDERTAGGED_RUNS))
    parser.add_argument("--candidates", default=",".join(UNDERTAGGED_CANDIDATES))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, help="--undertagged, --search: epochs (default: step budget)")
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--timeout-min", type=float, default=120.0, help="longest wait for one sweep")
    parser.add_argument("--extra-workers", type=int, default=0, help="more workers beside the service's own")
    parser.add_argument("--search", action="store_true", help="defaults vs tuned (benchmarks/loss_search.py)")
    parser.add_argument("--trials", type=int, default=6, help="--search: trials per candidate")
    parser.add_argument("--candidate", action="append", help="--search: a loss preset (default bce and apl)")
    args = parser.parse_args()
    if args.search:
        sys.path.insert(0, str(Path(__file__).parent))
        import loss_search

        options = {
            "candidates": args.candidate or ["bce", "apl"],
            "trials": args.trials,
            "seeds": [0, 1, 2],
            "render_only": args.render_only,
            "epochs": args.epochs,
        }
        names = args.only or ["digits"]
        loss_search.main(names, options, args.timeout_min * 60, args.extra_workers, RESULTS_MD)
        return
    if args.undertagged:
        if args.render_only:
            result = json.loads(undertagged_json(args.undertagged).read_text(encoding="utf-8"))
        else:
            seeds = [int(s) for s in args.seeds.split(",")]
            result = measure_undertagged(
                args.undertagged,
                args.candidates.split(","),
                seeds,
                args.timeout_min * 60,
                args.extra_workers,
                args.epochs,
            )
        write_undertagged(result)
        print(render_undertagged(result))
        return
    if args.render_only:
        results = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
    else:
        measured = measure(args.only or list(DEFAULT_RUNS), args.timeout_min * 60, args.extra_workers)
        # Read after measuring: another run may have written its results meanwhile.
        earlier = json.loads(RESULTS_JSON.read_text(encoding="utf-8")) if RESULTS_JSON.exists() else None
        results = merge(earlier, measured)
        RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    write_report(results, RESULTS_MD, RESULTS_PNG)
    print(render_markdown(results))


if __name__ == "__main__":
    main()
