"""How high the partial demo's planted label flips rank in the suspect-label list, through the service.

Starts `aplserve serve` (embedded worker, SQLite) on a fresh data dir, writes the demo data,
uploads `movies-genres-partial.csv` (30% of cells unknown, 3% of films with one wrong label),
trains minilm-l6 with the APL loss and default hyperparameters (unless --epochs), then reads
every page of GET /v1/models/{id}/label-issues and counts the planted flips
(`movies-genres-partial-flips.json`) that landed in the validation split and how many of those
are in the top 5% of the list (and how many cleanlab flagged).

    .venv/bin/python benchmarks/partial_label_issues.py [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from service_overhead import Service  # benchmarks/ is on sys.path when run as a script

from aplserve.demo_data import MOVIES_FLIPS, MOVIES_PARTIAL_CSV, write_demo_data


def ranking(service: Service, model_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = service.client.get(f"/v1/models/{model_id}/label-issues", params=params).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aplserve-partial-") as scratch:
        root = Path(scratch)
        write_demo_data(root / "demo")
        flips = {flip["row"] for flip in json.loads((root / "demo" / MOVIES_FLIPS).read_text())}
        service = Service(root / "var")
        try:
            dataset = service.upload(root / "demo" / MOVIES_PARTIAL_CSV)
            spec: dict[str, Any] = {
                "dataset_id": dataset["id"],
                "base_model": "minilm-l6",
                "loss": {"name": "apl"},
            }
            if args.epochs:
                spec["hyperparameters"] = {"epochs": args.epochs}
            job, _ = service.run_job(spec)
            items = ranking(service, job["model_id"])
        finally:
            service.stop()
    top = math.ceil(0.05 * len(items))
    in_val = [item for item in items if item["index"] in flips]
    in_top = [item for item in items[:top] if item["index"] in flips]
    print(
        json.dumps(
            {
                "samples": dataset["num_samples"],
                "unknown_cells": dataset["unknown_cells"],
                "planted_flips": len(flips),
                "validation_samples": len(items),
                "flips_in_validation": len(in_val),
                "top_5_percent": top,
                "flips_in_top_5_percent": len(in_top),
                "flips_flagged": sum(1 for item in in_val if item["flagged"]),
                "flagged": sum(1 for item in items if item["flagged"]),
                "flip_ranks": sorted(item["rank"] for item in in_val),
                "best_map": job["best_metrics"]["map"],
            }
        )
    )


if __name__ == "__main__":
    main()
