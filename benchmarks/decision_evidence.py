"""Before/after of the decision rules of issue 25 on the demo data: one model, scored by both.

For each (demo data, loss) pair one model is trained with the base model's defaults, a 20%
test split held out (`test_fraction=0.2`) and calibration off, so that its raw validation and
test scores are kept. Both rule sets are then applied to the *same* scores:

- before: per-label temperature scaling (`fit_temperatures`), max-F1 thresholds tuned from 2
  validation positives up with no held-out check, cleanlab on every label;
- after: `apl.evaluation.finalize` with calibration "auto" (per-label Platt / isotonic chosen
  on held-out folds), the evidence rule for thresholds, cleanlab on the labels the model can
  judge (`apl.label_issues.judge_labels`).

ECE is measured on the test split, which neither calibrator saw (raw, before, after), and,
for "after", also on the validation split's out-of-fold scores (what the Evaluation reports).
On the partial demos the flagged set is compared with the planted flips in validation.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decision_evidence.py --data movies --loss apl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from api.ingest.dataset import ingest_dataset
from apl.calibration import apply_temperatures, expected_calibration_error, fit_temperatures, sigmoid
from apl.evaluation import finalize
from apl.label_issues import JUDGE_LIFT, judge_labels, rank_label_issues
from apl.predictions import SplitPredictions
from apl.spec import DecisionSpec, JobSpec
from apl.thresholds import MIN_POSITIVES_TO_TUNE, choose_thresholds
from apl.training import TrainConfig, train
from aplserve.demo_data import (
    MOSAICS_FLIPS,
    MOSAICS_PARTIAL_ZIP,
    MOSAICS_ZIP,
    MOVIES_CSV,
    MOVIES_FLIPS,
    MOVIES_PARTIAL_CSV,
    write_demo_data,
)

#: --data: (file, answer key or None, base model)
DATA = {
    "movies": (MOVIES_CSV, None, "minilm-l6"),
    "movies-partial": (MOVIES_PARTIAL_CSV, MOVIES_FLIPS, "minilm-l6"),
    "digits": (MOSAICS_ZIP, None, "mobilenetv2-100"),
    "digits-partial": (MOSAICS_PARTIAL_ZIP, MOSAICS_FLIPS, "mobilenetv2-100"),
}


def _logits_and_targets(split: SplitPredictions) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits back from the stored float32 sigmoid scores (clipped at 1e-7), NaN for unknown."""
    probs = np.clip(split.probs.astype(np.float64), 1e-7, 1 - 1e-7)
    targets = split.targets.astype(np.float64)
    if split.known is not None:
        targets[~split.known] = np.nan
    return np.log(probs / (1 - probs)), targets


def _flag_scores(flagged: set[int], planted: set[int], total: int) -> dict[str, Any]:
    hits = len(flagged & planted)
    return {
        "flagged": len(flagged),
        "flagged_share": len(flagged) / total if total else 0.0,
        "precision": hits / len(flagged) if flagged else None,
        "recall": hits / len(planted) if planted else None,
    }


def _before(
    val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], labels: list[str]
) -> Any:
    """The old rules: temperatures, thresholds from 2 positives, cleanlab on every label."""
    (z, y), (zt, _) = val, test
    temperatures = fit_temperatures(z, y, min_positives=2)
    probs = apply_temperatures(z, temperatures)
    choice = choose_thresholds(probs, y, min_positives=2, check_held_out=False)
    return probs, choice, apply_temperatures(zt, temperatures), temperatures


def _thin(choice: Any, y: np.ndarray) -> list[int]:
    """Labels tuned from fewer than MIN_POSITIVES_TO_TUNE validation positives."""
    positives = np.nansum(y, axis=0)
    return [j for j, s in enumerate(choice.sources) if s == "tuned" and positives[j] < MIN_POSITIVES_TO_TUNE]


def _micro_f1(probs: np.ndarray, targets: np.ndarray, cut: np.ndarray) -> float:
    known = ~np.isnan(targets)
    chosen, truth = (probs >= cut[None, :])[known], (targets > 0.5)[known]
    return float(2 * (chosen & truth).sum() / max(chosen.sum() + truth.sum(), 1))


def lift_sweep(
    probs: np.ndarray,
    y: np.ndarray,
    cut: np.ndarray,
    labels: list[str],
    indices: np.ndarray,
    planted: set[int],
) -> dict[str, Any]:
    """The flagged set at several bars (the share of the random-to-perfect AP gap a label must close)."""
    out = {}
    for lift in (0.0, 0.25, 0.5, 0.75):
        judged = [j.judged for j in judge_labels(probs, y, labels, lift=lift)]
        ranked = rank_label_issues(probs, y, cut, labels, indices, judged=judged)
        flagged = {i.index for i in ranked if i.flagged}
        out[str(lift)] = {"judged": int(sum(judged))} | _flag_scores(flagged, planted, len(indices))
    return out


def compare(result: Any, planted: set[int]) -> dict[str, Any]:
    """Every figure of the before/after table for one trained model."""
    labels = list(result.labels)
    val, test = _logits_and_targets(result.validation), _logits_and_targets(result.test)
    (z, y), (zt, yt) = val, test
    indices = np.asarray(result.validation.indices)
    old_probs, old_choice, old_test, temperatures = _before(val, test, labels)
    new = finalize(z, y, labels, DecisionSpec(), "auto")
    new_probs, new_test = new.calibrator.apply(z), new.calibrator.apply(zt)
    judgements = judge_labels(new_probs, y, labels)
    old_rank = rank_label_issues(old_probs, y, old_choice.values, labels, indices)
    new_rank = rank_label_issues(
        new_probs, y, new.thresholds.values, labels, indices, judged=[j.judged for j in judgements]
    )
    in_val = planted & set(indices.tolist())
    return {
        "labels": labels,
        "validation_samples": len(indices),
        "test_samples": len(zt),
        "validation_positives": np.nansum(y, axis=0).astype(int).tolist(),
        "map_validation": float(result.evaluation["map"]) if result.evaluation else None,
        "ece_test": {
            "raw": expected_calibration_error(sigmoid(zt), yt),
            "before": expected_calibration_error(old_test, yt),
            "after": expected_calibration_error(new_test, yt),
        },
        "ece_validation_after_out_of_fold": new.calibration.ece_after,
        "temperatures_before": temperatures.round(3).tolist(),
        "methods_after": [c.method for c in new.calibrator.labels],
        "thresholds_before": old_choice.values.round(3).tolist(),
        "thresholds_after": new.thresholds.values.round(3).tolist(),
        "tuned_before": old_choice.sources.count("tuned"),
        "tuned_after": new.thresholds.sources.count("tuned"),
        "tuned_from_under_5_positives": {
            "before": len(_thin(old_choice, y)),
            "after": len(_thin(new.thresholds, y)),
        },
        "fallback_reasons_after": {
            labels[j]: r for j, r in enumerate(new.thresholds.reasons) if r is not None
        },
        "micro_f1_test": {
            "before": _micro_f1(old_test, yt, old_choice.values),
            "after": _micro_f1(new_test, yt, new.thresholds.values),
        },
        "excluded_from_suspects": {j.label: j.reason for j in judgements if not j.judged},
        "suspects": {
            "planted_in_validation": len(in_val),
            "before": _flag_scores({i.index for i in old_rank if i.flagged}, in_val, len(indices)),
            "after": _flag_scores({i.index for i in new_rank if i.flagged}, in_val, len(indices)),
            "by_bar": lift_sweep(new_probs, y, new.thresholds.values, labels, indices, in_val),
        },
    }


def run(data: str, loss: str, epochs: int | None, work: Path) -> dict[str, Any]:
    data_file, key_file, base_model = DATA[data]
    demo = work / "demo"
    if not (demo / data_file).exists():
        write_demo_data(demo)
    dataset_dir = work / f"dataset-{data}"
    if not dataset_dir.exists():
        ingest_dataset(demo / data_file, data_file, dataset_dir)
    planted = {f["row"] for f in json.loads((demo / key_file).read_text())} if key_file else set()
    overrides = {"seed": 0} | ({"epochs": epochs} if epochs else {})
    spec = JobSpec(
        dataset_id="benchmark",
        base_model=base_model,
        loss={"name": loss},
        hyperparameters=overrides,
        calibration="none",
        test_fraction=0.2,
    )
    started = time.monotonic()
    result = train(TrainConfig.from_job_spec(spec, dataset_dir, device="cpu"))
    out = {"data": data, "loss": loss, "base_model": base_model, "epochs": spec.hyperparameters.epochs}
    return out | {"train_seconds": round(time.monotonic() - started, 1)} | compare(result, planted)


def _share(block: dict[str, Any]) -> str:
    text = f"{block['flagged']} ({100 * block['flagged_share']:.0f}%)"
    if block["recall"] is not None:
        precision = "-" if block["precision"] is None else f"{block['precision']:.2f}"
        text += f", P {precision} R {block['recall']:.2f}"
    return text


def _flagged_after(suspects: dict[str, Any]) -> dict[str, Any]:
    """The flagged set at today's bar (`JUDGE_LIFT`), from the run's bar sweep when it has it: a row
    measured before the bar last moved reads as the code decides now."""
    return suspects.get("by_bar", {}).get(str(JUDGE_LIFT)) or suspects["after"]


def table(path: Path) -> str:
    """The docs/results.md table of the JSON lines in `path`."""
    head = (
        "| data | loss | test ECE raw / before / after | tuned from < 5 positives before / after "
        "| thresholds tuned before / after | test micro-F1 before / after "
        "| flagged before | flagged after |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ece, thin, f1, sus = (
            r["ece_test"],
            r["tuned_from_under_5_positives"],
            r["micro_f1_test"],
            r["suspects"],
        )
        rows.append(
            f"| {r['data']} | {r['loss']} | {ece['raw']:.3f} / {ece['before']:.3f} / {ece['after']:.3f} "
            f"| {thin['before']} / {thin['after']} "
            f"| {r['tuned_before']} / {r['tuned_after']} of {len(r['labels'])} "
            f"| {f1['before']:.3f} / {f1['after']:.3f} "
            f"| {_share(sus['before'])} | {_share(_flagged_after(sus))} |"
        )
    return head + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="movies")
    parser.add_argument("--loss", action="append", choices=["bce", "focal", "asl", "apl"])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the demo data here between runs")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run")
    parser.add_argument(
        "--table", type=Path, default=None, help="print the table of these JSON lines and stop"
    )
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    with tempfile.TemporaryDirectory(prefix="aplserve-evidence-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        for loss in args.loss or ["apl"]:
            row = run(args.data, loss, args.epochs, work)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")


if __name__ == "__main__":
    main()
