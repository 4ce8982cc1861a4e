"""How high the partial demos' planted label flips rank in the suspect-label list, through the service.

Starts `aplserve serve` (embedded worker, SQLite) on a fresh data dir, writes the demo data,
uploads a partial variant (30% of cells unknown, 3% of samples with one wrong label):
`digits-mosaics-partial.zip` with mobilenetv2-100 (`--data digits`, the default) or
`movies-genres-partial.csv` with minilm-l6 (`--data movies`), trains with the APL loss and
the base model's default hyperparameters (unless --epochs / --lr / --image-size), then reads
every page of GET /v1/models/{id}/label-issues and counts the planted flips (the answer key
written next to the data) that landed in the validation split and how many of those are in
the top 5% of the list (and how many cleanlab flagged).

    .venv/bin/python benchmarks/partial_label_issues.py [--data digits|movies] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from service_overhead import Service  # benchmarks/ is on sys.path when run as a script

from aplserve.demo_data import (
    MOSAICS_FLIPS,
    MOSAICS_PARTIAL_ZIP,
    MOVIES_FLIPS,
    MOVIES_PARTIAL_CSV,
    write_demo_data,
)

#: --data: (file, answer key, base model)
DATA = {
    "digits": (MOSAICS_PARTIAL_ZIP, MOSAICS_FLIPS, "mobilenetv2-100"),
    "movies": (MOVIES_PARTIAL_CSV, MOVIES_FLIPS, "minilm-l6"),
}


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
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    args = parser.parse_args()
    data_file, key_file, base_model = DATA[args.data]
    with tempfile.TemporaryDirectory(prefix="aplserve-partial-") as scratch:
        root = Path(scratch)
        write_demo_data(root / "demo")
        flips = {flip["row"] for flip in json.loads((root / "demo" / key_file).read_text())}
        service = Service(root / "var")
        try:
            dataset = service.upload(root / "demo" / data_file)
            spec: dict[str, Any] = {
                "dataset_id": dataset["id"],
                "base_model": base_model,
                "loss": {"name": "apl"},
            }
            chosen = {"epochs": args.epochs, "learning_rate": args.lr, "image_size": args.image_size}
            if any(value is not None for value in chosen.values()):
                spec["hyperparameters"] = {k: v for k, v in chosen.items() if v is not None}
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
                "data": data_file,
                "base_model": base_model,
                "hyperparameters": job["spec"]["hyperparameters"],
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
