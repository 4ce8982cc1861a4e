"""What a newcomer gets from the demo data with the default hyperparameters: the README's table.

Starts `aplserve serve` (embedded worker, SQLite) on a fresh data dir, writes the demo
datasets (`aplserve demo-data`), uploads them and trains each with its built-in base
model, the APL loss and every hyperparameter left at its default, one job after the
other. Prints, per run: samples, epochs, the training time of one epoch (samples/s
from the job's history: steps only, validation excluded), the epoch's wall time
(`time_s` differences: training + validation), the job's start-to-finish time, and the
validation mAP / micro-F1 of the best epoch.

    .venv/bin/python benchmarks/what_to_expect.py [--only movies|digits]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from service_overhead import Service, _seconds  # benchmarks/ is on sys.path when run as a script

from aplserve.demo_data import MOSAICS_ZIP, MOVIES_CSV, write_demo_data

RUNS = {"movies": (MOVIES_CSV, "minilm-l6"), "digits": (MOSAICS_ZIP, "mobilenetv2-100")}


def history(service: Service, job_id: str) -> list[dict[str, Any]]:
    body = service.client.get(f"/v1/jobs/{job_id}/events", params={"limit": 500}).json()
    items: list[dict[str, Any]] = body["items"]
    return items


def run(service: Service, demo: Path, name: str) -> dict[str, Any]:
    filename, base_model = RUNS[name]
    dataset = service.upload(demo / filename)
    job, series = service.run_job(
        {"dataset_id": dataset["id"], "base_model": base_model, "loss": {"name": "apl"}}
    )
    rates = [e["data"]["samples_per_s"] for e in history(service, job["id"]) if e["type"] == "epoch"]
    times = [point["time_s"] for point in series]
    epoch_walls = [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]
    best = job["best_metrics"]
    return {
        "data": f"{filename} ({dataset['num_samples']} samples, {len(dataset['labels'])} labels)",
        "base_model": base_model,
        "epochs": len(series),
        "samples_per_s": statistics.median(rates),
        "epoch_s": statistics.median(epoch_walls),
        "job_s": _seconds(job["started_at"], job["finished_at"]),
        "map": best["map"],
        "micro_f1": best["micro_f1"],
        "best_epoch": best.get("best_epoch", best.get("epoch")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aplserve-expect-") as scratch:
        root = Path(scratch)
        write_demo_data(root / "demo")
        service = Service(root / "var")
        try:
            rows = [run(service, root / "demo", name) for name in args.only or RUNS]
        finally:
            service.stop()
    print(
        "| demo data | base model | epochs | train samples/s | epoch (train + validation) | job "
        "| best mAP | micro-F1 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['data']} | {r['base_model']} | {r['epochs']} | {r['samples_per_s']:.1f} | "
            f"{r['epoch_s']:.1f} s | {r['job_s']:.0f} s | {r['map']:.3f} (epoch {r['best_epoch']}) | "
            f"{r['micro_f1']:.3f} |"
        )


if __name__ == "__main__":
    main()
