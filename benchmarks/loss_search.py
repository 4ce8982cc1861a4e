"""Each loss at its defaults vs tuned by a search sweep, on the demo data: docs/results.md.

`benchmarks/loss_quality.py --search` runs this. Per data set it starts `aplserve serve`
(embedded worker, SQLite) plus `--extra-workers` more worker processes on a fresh data
dir and runs ONE search sweep: the candidates (default bce and apl) x `--trials` Optuna
trials each in the base model's default space (GET /v1/base-models, `space`), pruned by
the median rule, then each candidate's best configuration on seeds 0, 1, 2, scored on
the test split. The "defaults" column is the same loss at the base model's defaults on
the same seeds and splits, read from docs/loss-quality.json (loss_quality.py's sweeps);
the logistic-regression baseline is fitted on the same splits. Writes:

    docs/loss-search.json   the sweeps, trials, leaderboards and baselines as measured
    docs/results.md         the part between the loss-search markers
    docs/loss-search.png    test mAP per loss: defaults vs tuned (mean, 95% interval), baseline line

    .venv/bin/python benchmarks/loss_quality.py --search --only digits --trials 6 --extra-workers 1
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SEARCH_JSON = DOCS / "loss-search.json"
SEARCH_PNG = DOCS / "loss-search.png"
DEFAULTS_JSON = DOCS / "loss-quality.json"
START = "<!-- loss-search:start (written by benchmarks/loss_quality.py --search) -->"
END = "<!-- loss-search:end -->"
POLL_S = 5.0


def run_search(
    service: Any, dataset: dict[str, Any], base_model: str, options: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """POST a search sweep, wait for it; the sweep, its leaderboard, trials and the phases' times."""
    spec = {
        "dataset_id": dataset["id"],
        "base_model": base_model,
        "candidates": [{"name": name} for name in options["candidates"]],
        "seeds": options["seeds"],
        "search": {"trials": options["trials"], "pruner": "median", "sampler": "tpe"},
    }
    if options.get("epochs"):  # else the base model's step budget, stopped by evidence
        spec["hyperparameters"] = {"epochs": options["epochs"]}
    response = service.client.post("/v1/sweeps", json=spec)
    response.raise_for_status()
    sweep: dict[str, Any] = response.json()
    started, search_s = time.monotonic(), None
    while sweep["status"] in ("queued", "running"):
        if time.monotonic() - started > timeout_s:
            service.client.post(f"/v1/sweeps/{sweep['id']}/cancel")
            raise RuntimeError(f"sweep {sweep['id']} did not finish in {timeout_s:.0f} s; cancelled")
        time.sleep(POLL_S)
        sweep = service.client.get(f"/v1/sweeps/{sweep['id']}").json()
        if sweep["phase"] == "replicate" and search_s is None:
            search_s = time.monotonic() - started
        print(f"  {base_model}: {sweep['phase']} {sweep['trials']}", file=sys.stderr, flush=True)
    board = service.client.get(f"/v1/sweeps/{sweep['id']}/leaderboard").json()
    trials = service.client.get(f"/v1/sweeps/{sweep['id']}/trials", params={"limit": 200}).json()
    return {
        "sweep": sweep,
        "leaderboard": board,
        "trials": trials,
        "wall_s": time.monotonic() - started,
        "search_s": search_s,
    }


def measure(
    names: list[str], options: dict[str, Any], timeout_s: float, extra_workers: int
) -> dict[str, Any]:
    """Every requested data set through one fresh service."""
    sys.path.insert(0, str(Path(__file__).parent))
    from loss_quality import RUNS, _machine, demo_service, run_baseline

    runs = []
    with demo_service("aplserve-loss-search-", extra_workers) as (data_dir, service):
        for name in names:
            filename, base_model = RUNS[name]
            dataset = service.upload(data_dir.parent / "demo" / filename)
            print(f"{name}: search sweep of {base_model} on {filename}", file=sys.stderr, flush=True)
            measured = run_search(service, dataset, base_model, options, timeout_s)
            baseline = run_baseline(data_dir, dataset["id"], measured["sweep"]["spec"])
            record = {
                "name": name,
                "data": filename,
                "base_model": base_model,
                "workers": 1 + extra_workers,
            }
            runs.append(record | measured | {"baseline": baseline, "machine": _machine()})
    return {"runs": runs}


# --- reporting (pure: from the measured dicts) ---------------------------------------------


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _mean_ci(row: dict[str, Any] | None) -> str:
    if not row or row.get("mean") is None:
        return "–"
    ci = row.get("ci95")
    interval = f" ({ci[0]:.3f} .. {ci[1]:.3f})" if ci and ci[0] is not None else ""
    return f"{row['mean']:.3f}{interval}"


def _config(config: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in config.items()) or "–"


def defaults_rows(name: str) -> dict[str, dict[str, Any]]:
    """loss name -> the leaderboard row of the defaults sweep of the same run in loss-quality.json."""
    if not DEFAULTS_JSON.exists():
        return {}
    runs = json.loads(DEFAULTS_JSON.read_text(encoding="utf-8")).get("runs", [])
    run = next((r for r in runs if r["name"] == name), None)
    return {row["candidate"]["name"]: row for row in (run or {}).get("leaderboard", {}).get("rows", [])}


def _header(run: dict[str, Any]) -> str:
    sweep, t = run["sweep"], run["sweep"]["trials"]
    search = sweep["spec"]["search"]
    return (
        f"Search sweep `{sweep['id']}` {sweep['status']} in {run['wall_s'] / 60:.1f} min on "
        f"{run['workers']} worker process(es) (search phase {(run['search_s'] or 0) / 60:.1f} min): "
        f"{search['trials']} trials per candidate ({t['pruned']} of {t['total']} pruned, "
        f"{t['failed']} failed), sampler {search['sampler']}, pruner {search['pruner']}, space "
        f"{json.dumps(search['space'])}; replicates on seeds {sweep['spec']['seeds']}; {run['machine']}."
    )


def _verdict(board: dict[str, Any]) -> str:
    c = board.get("comparison")
    if not c:
        return f"**{board['verdict']}**"
    lo, hi = c["delta_ci95"]
    pair = f"{c['candidate']['name']} - {c['versus']['name']}"
    return f"**{board['verdict']}** ({pair} {c['delta']:+.3f}, 95% interval {lo:+.3f} .. {hi:+.3f})"


def _trial_words(trial: dict[str, Any]) -> str:
    rate = trial["params"].get("learning_rate", 0)
    return (
        f"{trial['candidate']['name']} #{trial['number']}: {rate:.2g}, {trial['state']}, {_f(trial['value'])}"
    )


def run_lines(run: dict[str, Any]) -> list[str]:
    board, trials = run["leaderboard"], run["trials"]["items"]
    defaults = defaults_rows(run["name"])
    lines = [
        f"### {run['data']}, {run['base_model']}",
        "",
        _header(run),
        "",
        "| loss | defaults: test mAP (95% interval) | tuned: test mAP (95% interval) | tuned - defaults "
        "| chosen configuration | search value (val) |",
        "|---|---|---|---:|---|---:|",
    ]
    for row in board["rows"]:
        base = defaults.get(row["candidate"]["name"])
        known = base and base.get("mean") is not None and row["mean"] is not None
        gain = f"{row['mean'] - base['mean']:+.3f}" if known else "–"  # type: ignore[index]
        lines.append(
            f"| {row['candidate']['name']} | {_mean_ci(base)} | {_mean_ci(row)} | {gain} "
            f"| {_config(row['config'])} | {_f(row['search_value'])} |"
        )
    lines += [
        "",
        f"Tuned leaderboard verdict: {_verdict(board)}. Logistic-regression baseline on the same splits: "
        f"{_mean_ci(run['baseline'])}.",
        "",
        "Trials (candidate #number: learning rate, state, validation value): "
        + "; ".join(_trial_words(t) for t in trials),
        "",
    ]
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        START,
        "## Defaults vs tuned: search sweeps on the demo data",
        "",
        "Measured with `benchmarks/loss_quality.py --search` (raw numbers: "
        "[loss-search.json](loss-search.json); plot: [loss-search.png](loss-search.png)). Tuned: the "
        "replicate phase of one search sweep (each candidate's best trial's configuration on seeds 0, 1, 2, "
        "scored once on the held-out test split; the search saw the validation split of seed 0 only). "
        "Defaults: the same loss at the base model's defaults on the same seeds and splits, from the "
        "loss-quality sweeps above (measured earlier on the same kind of machine).",
        "",
        "![defaults vs tuned](loss-search.png)",
        "",
    ]
    for run in results["runs"]:
        lines += run_lines(run)
    return "\n".join([*lines, END])


def splice(existing: str, generated: str) -> str:
    if START in existing and END in existing:
        head, rest = existing.split(START, 1)
        return head + generated + rest.split(END, 1)[1]
    return existing.rstrip("\n") + "\n\n" + generated + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Per data set: each loss at defaults and tuned (mean, 95% interval), the baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    figure, axes = plt.subplots(1, len(runs), figsize=(4.8 * len(runs), 4.0), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        defaults = defaults_rows(run["name"])
        rows = sorted(run["leaderboard"]["rows"], key=lambda row: row["candidate"]["name"])
        for x, row in enumerate(rows):
            for offset, source, color, label in (
                (-0.12, defaults.get(row["candidate"]["name"]), "C7", "defaults"),
                (0.12, row, "C0", "tuned"),
            ):
                if (
                    source
                    and source.get("mean") is not None
                    and source.get("ci95")
                    and source["ci95"][0] is not None
                ):
                    mean, (lo, hi) = source["mean"], source["ci95"]
                    ax.errorbar(
                        x + offset,
                        mean,
                        yerr=[[mean - lo], [hi - mean]],
                        fmt="o",
                        color=color,
                        capsize=5,
                        label=label if x == 0 else None,
                    )
        base = run["baseline"]
        if base.get("mean") is not None:
            ax.axhline(
                base["mean"], color="C3", linestyle="--", label=f"logistic regression {base['mean']:.3f}"
            )
        ax.set_xticks(range(len(rows)), [row["candidate"]["name"] for row in rows])
        ax.set_title(f"{run['data']}\n{run['base_model']}", fontsize=10)
        ax.set_ylabel("test mAP (mean, 95% interval)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(results: dict[str, Any], md_path: Path) -> None:
    existing = md_path.read_text(encoding="utf-8") if md_path.exists() else "# Results\n"
    md_path.write_text(splice(existing, render_markdown(results)), encoding="utf-8")
    plot(results, SEARCH_PNG)


def main(
    names: list[str], options: dict[str, Any], timeout_s: float, extra_workers: int, md_path: Path
) -> None:
    """Measure (unless render-only), merge with earlier runs of other data sets, write the report."""
    if options.get("render_only"):
        results = json.loads(SEARCH_JSON.read_text(encoding="utf-8"))
    else:
        measured = measure(names, options, timeout_s, extra_workers)
        earlier = (
            json.loads(SEARCH_JSON.read_text(encoding="utf-8")) if SEARCH_JSON.exists() else {"runs": []}
        )
        by_name = {run["name"]: run for run in earlier["runs"]} | {
            run["name"]: run for run in measured["runs"]
        }
        results = {"runs": list(by_name.values())}
        SEARCH_JSON.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    write_report(results, md_path)
    print(render_markdown(results))
