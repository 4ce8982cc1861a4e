"""The short runs the per-base-model defaults in `apl.catalog` were chosen from.

Starts `aplserve serve` (embedded worker, SQLite) on a fresh data dir, uploads the demo
datasets and trains one job per setting (APL loss, seed 0, a 20% test split held out as
a sweep holds it out), one after the other. Prints per run the validation mAP of the
best epoch (what the choice is made on: the test split is the sweep's, so it is not
used to choose), the test mAP for information, and the job's wall time.

    .venv/bin/python benchmarks/tune_defaults.py [--only movies|digits|lite0] [--epochs 3]
    .venv/bin/python benchmarks/tune_defaults.py --run mobilenetv2-100:learning_rate=2e-3,epochs=8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from service_overhead import Service, _seconds  # benchmarks/ is on sys.path when run as a script

from aplserve.demo_data import MOSAICS_ZIP, MOVIES_CSV, write_demo_data

#: (demo file, base model, hyperparameters) per group; every run also sets epochs and the seed.
GRID: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "digits": (
        MOSAICS_ZIP,
        "mobilenetv2-100",
        [{"learning_rate": lr, "image_size": 128} for lr in (5e-5, 1e-3, 3e-3)],
    ),
    "lite0": (
        MOSAICS_ZIP,
        "efficientnet-lite0",
        [{"learning_rate": lr, "image_size": 128} for lr in (1e-3, 3e-3)],
    ),
    "movies": (
        MOVIES_CSV,
        "minilm-l6",
        [{"learning_rate": lr} for lr in (1e-4, 3e-4)],
    ),
}


def run(service: Service, dataset_id: str, base_model: str, hyperparameters: dict[str, Any]) -> str:
    started = time.monotonic()
    job, _series = service.run_job(
        {
            "dataset_id": dataset_id,
            "base_model": base_model,
            "loss": {"name": "apl"},
            "hyperparameters": {**hyperparameters, "seed": 0},
            "test_fraction": 0.2,
        }
    )
    best = job["best_metrics"]
    settings = ", ".join(f"{k}={v:g}" for k, v in hyperparameters.items())
    return (
        f"| {base_model} | {settings} | {best['map']:.3f} (epoch {best.get('epoch')}) | "
        f"{best['test']['map']:.3f} | {_seconds(job['started_at'], job['finished_at']):.0f} s "
        f"({time.monotonic() - started:.0f} s queued to done) |"
    )


def _parse_run(text: str) -> tuple[str, str, list[dict[str, Any]]]:
    model, _, settings = text.partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        values[key] = float(value) if key == "learning_rate" else int(value)
    filename = MOVIES_CSV if model == "minilm-l6" else MOSAICS_ZIP
    return filename, model, [values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(GRID), action="append")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--run", action="append", help="MODEL:key=value,... instead of the grid")
    args = parser.parse_args()
    if args.run:
        GRID.clear()
        GRID.update({f"run{i}": _parse_run(text) for i, text in enumerate(args.run)})
    with tempfile.TemporaryDirectory(prefix="aplserve-tune-") as scratch:
        root = Path(scratch)
        write_demo_data(root / "demo")
        service = Service(root / "var")
        print("| base model | hyperparameters | validation mAP (best epoch) | test mAP | job |", flush=True)
        print("|---|---|---:|---:|---:|", flush=True)
        try:
            uploaded: dict[str, str] = {}
            for group in args.only or GRID:
                filename, base_model, settings = GRID[group]
                if filename not in uploaded:
                    uploaded[filename] = service.upload(root / "demo" / filename)["id"]
                for hyperparameters in settings:
                    settings_run = {"epochs": args.epochs, **hyperparameters}
                    print(run(service, uploaded[filename], base_model, settings_run), flush=True)
        finally:
            service.stop()


if __name__ == "__main__":
    main()
