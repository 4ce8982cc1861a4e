"""Upload files made from the synthetic datasets of tests/apl/synthetic.py."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tests.apl.synthetic import write_image_dataset, write_text_dataset


def write_text_csv(path: Path, n: int = 48) -> Path:
    """The keyword dataset (labels animal/color/food) as an upload CSV."""
    with tempfile.TemporaryDirectory() as stored:
        root = write_text_dataset(Path(stored), n=n)
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "labels"])
            for line in (root / "samples.jsonl").read_text().splitlines():
                sample = json.loads(line)
                writer.writerow([sample["text"], "|".join(sample["labels"])])
    return path


def write_image_zip(path: Path, n: int = 32) -> Path:
    """Coloured-quadrant images (labels red/green/blue) as an upload ZIP with labels.csv."""
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["filename", "labels"])
    with tempfile.TemporaryDirectory() as stored, zipfile.ZipFile(path, "w") as archive:
        root = write_image_dataset(Path(stored), n=n, size=32)
        for line in (root / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            name = Path(sample["image"]).name
            archive.write(root / sample["image"], name)
            writer.writerow([name, "|".join(sample["labels"])])
        archive.writestr("labels.csv", rows.getvalue())
    return path


def tiny_text_job(tiny_bert: Path, **hyperparameters: Any) -> dict[str, Any]:
    """Arguments for `client.jobs.create` that train in a few seconds on CPU."""
    return {
        "base_model": f"hf:{tiny_bert}",
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 32}
        | hyperparameters,
    }
