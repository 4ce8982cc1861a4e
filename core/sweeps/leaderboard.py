"""The leaderboard of a sweep: per candidate mean, sd and 95% interval over seeds, and a verdict.

Per-seed values are each child's test metrics, computed once by the worker at the
best epoch (`best_metrics["test"]`). The verdict compares the best candidate (highest
mean) with the runner-up by the paired bootstrap of `apl.stats` over the test samples
of the seeds both have, read from the children's stored test predictions:

    incomplete       the sweep has not succeeded (children still run, or it failed or was cancelled)
    winner           the 95% interval of best - runner-up lies above 0
    no_clear_winner  it contains 0 (or there is nothing to compare)

The winner's recommended model is the model of its child with the best test value.
numpy and the statistics are imported inside `build` only: the API process imports
this module at start-up and must stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from core.jobs.status import JobStatus
from core.sweeps.spec import SweepSpec, candidate_label
from core.sweeps.state import Child

if TYPE_CHECKING:
    from apl.predictions import SplitPredictions
    from apl.stats import BootstrapResult

PredictionsLoader = Callable[[str], "SplitPredictions | None"]


def _per_seed(child: Child, metric: str) -> dict[str, Any]:
    test = child.test_metrics() or {}
    return {
        "seed": child.seed,
        "job_id": child.job_id,
        "value": float(test[metric]),
        "map": float(test["map"]),
        "macro_f1": float(test["macro_f1"]),
        "micro_f1": float(test["micro_f1"]),
    }


def _rows(
    spec: SweepSpec, children: Sequence[Child], search_result: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One row per candidate, best mean first; candidates without a result yet come last.

    Each row carries its candidate's chosen configuration and its validation value in the
    search (`{}` and null without a search). Trials never count: they saw no test split.
    """
    from apl.stats import t_interval

    rows = []
    children = [c for c in children if c.role != "trial"]
    for index, candidate in enumerate(spec.candidates):
        chosen = (search_result or {}).get(str(index)) or {}
        per_seed = [_per_seed(c, spec.metric) for c in children if c.candidate == index and c.has_result]
        interval = t_interval([p["value"] for p in per_seed])
        ci95 = [interval.lo, interval.hi] if interval.lo is not None else None
        rows.append(
            {
                "candidate": candidate.model_dump(mode="json"),
                "label": candidate_label(candidate),
                "n": interval.n,
                "mean": interval.mean,
                "sd": interval.sd,
                "ci95": ci95,
                "per_seed": per_seed,
                "config": dict(chosen.get("config") or {}),
                "search_value": chosen.get("value"),
                "_index": index,
            }
        )
    rows.sort(key=lambda r: (r["mean"] is None, -(r["mean"] or 0.0), r["_index"]))
    return rows


#: The linear baselines every child fits beside its training (apl.training.baselines), by key.
BASELINE_LABELS = {
    "linear_probe": "baseline: linear probe (frozen base model + logistic regression)",
    "tfidf": "baseline: TF-IDF + logistic regression",
}


def _baseline_seeds(metric: str, children: Sequence[Child]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per baseline, per seed: its test scores (every child of a seed fits the same one; the first counts)."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for child in children:
        if not child.has_result:
            continue
        baselines = (child.best_metrics or {}).get("baselines") or {}
        for key in BASELINE_LABELS:
            test = (baselines.get(key) or {}).get("test")
            seeds = found.setdefault(key, {})
            if isinstance(test, dict) and child.seed not in seeds:
                seeds[child.seed] = {
                    "seed": child.seed,
                    "job_id": child.job_id,
                    "value": float(test[metric]),
                    **{name: float(test[name]) for name in ("map", "macro_f1", "micro_f1")},
                }
    return found


def _baseline_rows(spec: SweepSpec, children: Sequence[Child]) -> list[dict[str, Any]]:
    """The baselines as leaderboard rows (marked `baseline`), over the same seeds' test splits.

    They never take part in the verdict (it compares the candidate losses); they say whether
    fine-tuning with any candidate beats what a linear model gets from the same split.
    """
    from apl.stats import t_interval

    rows = []
    for key, seeds in _baseline_seeds(spec.metric, children).items():
        per_seed = [seeds[seed] for seed in sorted(seeds)]
        if not per_seed:
            continue
        interval = t_interval([p["value"] for p in per_seed])
        rows.append(
            {
                "baseline": key,
                "label": BASELINE_LABELS[key],
                "n": interval.n,
                "mean": interval.mean,
                "sd": interval.sd,
                "ci95": [interval.lo, interval.hi] if interval.lo is not None else None,
                "per_seed": per_seed,
            }
        )
    return sorted(rows, key=lambda r: -(r["mean"] or 0.0))


def _scored(predictions: SplitPredictions) -> Any:
    from apl.stats import Scored

    return Scored(predictions.probs, predictions.targets, predictions.thresholds, predictions.known)


def _pairs(best: dict[str, Any], other: dict[str, Any], load: PredictionsLoader) -> tuple[list[Any], int]:
    """PairedSeeds for the seeds both rows have with readable predictions; and how many lacked them."""
    from apl.stats import PairedSeed

    theirs = {p["seed"]: p["job_id"] for p in other["per_seed"]}
    pairs, unreadable = [], 0
    for point in best["per_seed"]:
        if point["seed"] not in theirs:
            continue
        a, b = load(point["job_id"]), load(theirs[point["seed"]])
        if a is None or b is None or a.probs.shape != b.probs.shape or not (a.indices == b.indices).all():
            unreadable += 1
            continue
        group = "test-dataset" if a.source == "dataset" else None  # the same samples for every seed
        pairs.append(PairedSeed(_scored(a), _scored(b), group))
    return pairs, unreadable


def _method(spec: SweepSpec, result: BootstrapResult | None, note: str) -> str:
    text = (
        f"test split ({_split_words(spec)}); ranked by test {spec.metric} of each child at its best "
        "validation epoch, thresholds tuned on validation only. Per candidate: mean and sample sd over "
        "seeds, 95% Student-t interval (n-1 degrees of freedom). "
    )
    if result is not None:
        text += (
            f"Best vs runner-up: paired bootstrap of the difference in test {spec.metric}, "
            f"{result.resamples} resamples of the test samples within each seed (the same indices for "
            f"both candidates), the difference averaged over {result.seeds} seed(s), percentile 95% "
            f"interval, bootstrap RNG seed {result.seed}; a winner only when the interval excludes 0. "
        )
    return text + note


def _split_words(spec: SweepSpec) -> str:
    if spec.test_dataset_id is not None:
        return f"the separate dataset {spec.test_dataset_id}"
    return f"{spec.test_fraction:g} of the dataset held out per seed before the train/validation split"


def _verdict(
    spec: SweepSpec, rows: list[dict[str, Any]], load: PredictionsLoader, resamples: int, seed: int
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None, str]:
    """(verdict, winner, comparison, method) of a sweep whose children all ended with results."""
    from apl.stats import paired_bootstrap

    ranked = [r for r in rows if r["n"] > 0]
    if len(ranked) < 2:
        return "no_clear_winner", None, None, _method(spec, None, "Only one candidate: nothing to compare.")
    best, other = ranked[0], ranked[1]
    pairs, unreadable = _pairs(best, other, load)
    if not pairs:
        note = "No seed has test predictions of both the best and the runner-up, so no interval."
        return "no_clear_winner", None, None, _method(spec, None, note)
    result = paired_bootstrap(pairs, spec.metric, resamples=resamples, seed=seed)
    comparison = {
        "candidate": best["candidate"],
        "versus": other["candidate"],
        "delta": result.delta,
        "delta_ci95": [result.lo, result.hi],
    }
    note = f"{unreadable} seed(s) without readable predictions were left out. " if unreadable else ""
    if result.lo <= 0:
        return "no_clear_winner", None, comparison, _method(spec, result, note)
    top = max(best["per_seed"], key=lambda p: p["value"])
    winner = {**comparison, "job_id": top["job_id"], "seed": top["seed"], "model_id": None}
    note += "The recommended model is the winner's child with the best test value."
    return "winner", winner, comparison, _method(spec, result, note)


def build(
    sweep_id: str,
    spec: SweepSpec,
    children: Sequence[Child],
    status: JobStatus,
    load: PredictionsLoader,
    *,
    resamples: int | None = None,
    bootstrap_seed: int | None = None,
    search_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Leaderboard document (without live model ids: see `core.sweeps` callers)."""
    from apl.stats import DEFAULT_BOOTSTRAP_SEED, DEFAULT_RESAMPLES

    rows = _rows(spec, children, search_result)
    complete = status == JobStatus.SUCCEEDED
    if complete:
        verdict, winner, comparison, method = _verdict(
            spec,
            rows,
            load,
            DEFAULT_RESAMPLES if resamples is None else resamples,
            DEFAULT_BOOTSTRAP_SEED if bootstrap_seed is None else bootstrap_seed,
        )
    else:
        why = "children are still running" if not status.is_final else f"the sweep {status.value}"
        verdict, winner, comparison = "incomplete", None, None
        method = _method(spec, None, f"No verdict: {why}.")
    for row in rows:
        del row["_index"]
    return {
        "sweep_id": sweep_id,
        "status": status.value,
        "metric": spec.metric,
        "split": "test",
        "complete": complete,
        "rows": rows,
        "baseline_rows": _baseline_rows(spec, children),
        "verdict": verdict,
        "winner": winner,
        "comparison": comparison,
        "method": method,
    }
