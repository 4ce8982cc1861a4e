"""Fine-tuned jobs against their linear baselines on the demo sets and two more real data sets.

Builds the data sets offline (nothing is committed but this code):

    debtags    Debian package descriptions (short + the start of the long description) with
               their debtags, from the local apt lists (`apt-cache dumpavail`; run
               `apt-get update` first). Tags of the `role::` and `interface::` facets are
               left out (they say how a package is packaged, not what it is about); the
               `MAX_TAGS` most frequent of the rest with at least `MIN_TAG_COUNT` samples are
               kept: 20+ labels, few samples per label for most of them.
    fashion    2x2 mosaics of Fashion-MNIST items (Debian package `dataset-fashion-mnist`),
               labelled with the item classes they show, built like the digit mosaics demo.
    movies, digits   the demo sets (aplserve demo-data).

Then trains, per data set, a job with only the dataset and the base model (the APL loss, a
step budget stopped by evidence) and the same with the BCE loss, each through
`apl.training.train` exactly as the worker runs a job, and records the fine-tuned model's
validation mAP beside its linear probe's and (text) TF-IDF's, which model the job
publishes, why training stopped, and what the baselines cost in time. `--learning-rate`
and `--head-init` (the linear probe or a random head) run the same jobs with another value
than the base model's default, which is how the defaults were chosen (docs/results.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/baseline_study.py --only text --out study-text.json
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import io
import json
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from aplserve.demo_data import MOSAICS_ZIP, MOVIES_CSV, Mosaic, movie_samples, plan_mosaics, write_demo_data

SEED = 1234
MAX_TAGS = 30
MIN_TAG_COUNT = 30
NUM_PACKAGES = 1500
#: Facets that describe packaging rather than content.
SKIPPED_FACETS = ("role::", "interface::", "implemented-in::", "uitoolkit::", "x11::", "special::", "suite::")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_NAMES = (
    *("tshirt", "trouser", "pullover", "dress", "coat"),
    *("sandal", "shirt", "sneaker", "bag", "boot"),
)
NUM_FASHION = 400
#: How the table names the heads' starts (`head_init`).
HEADS = {"linear_probe": "probe", "random": "random"}


def _stanzas(text: str) -> list[dict[str, str]]:
    """RFC 822 stanzas of `apt-cache dumpavail` (continuation lines joined with newlines)."""
    out: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def _description(raw: str) -> str:
    short, _, long = raw.partition("\n")
    body = " ".join(part for part in long.split("\n") if part != ".")
    return f"{short}. {body[:300]}".strip()


def debtags_samples(count: int = NUM_PACKAGES, seed: int = SEED) -> list[tuple[str, list[str]]]:
    """Package descriptions and their content tags (see the module docstring)."""
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    packages: dict[str, tuple[str, list[str]]] = {}
    for stanza in _stanzas(dump):
        tags = [t.strip() for t in stanza.get("Tag", "").replace("\n", " ").split(",") if t.strip()]
        tags = [t for t in tags if not t.startswith(SKIPPED_FACETS)]
        if tags and "Description" in stanza and stanza["Package"] not in packages:
            packages[stanza["Package"]] = (_description(stanza["Description"]), tags)
    rng = np.random.default_rng(seed)
    names = sorted(packages)
    chosen = [names[i] for i in rng.permutation(len(names))[: count * 2]]
    counts = collections.Counter(tag for name in chosen for tag in packages[name][1])
    floor = max(8, MIN_TAG_COUNT * count // NUM_PACKAGES)  # scaled down with a smaller sample
    kept = {tag for tag, n in counts.most_common(MAX_TAGS) if n >= floor}
    samples = []
    for name in chosen:
        text, tags = packages[name]
        labels = sorted(set(tags) & kept)
        if labels:
            samples.append((text, labels))
    return samples[:count]


def write_text_csv(path: Path, samples: list[tuple[str, list[str]]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "labels"])
        writer.writerows((text, "|".join(labels)) for text, labels in samples)
    return path


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_fashion_mosaics(path: Path, count: int = NUM_FASHION, seed: int = SEED) -> list[Mosaic]:
    """2x2 mosaics of 28x28 Fashion-MNIST items (1-3 classes each), as a ZIP with labels.csv."""
    from PIL import Image

    images = _idx(f"{FASHION_DIR}/train-images-idx3-ubyte.gz")
    targets = _idx(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz")
    mosaics = plan_mosaics(targets, count, seed)
    labels_csv = io.StringIO()
    writer = csv.writer(labels_csv, lineterminator="\n")
    writer.writerow(["filename", "labels"])
    with zipfile.ZipFile(path, "w") as archive:
        for mosaic in mosaics:
            canvas = np.zeros((56, 56), dtype=np.uint8)
            for tile in mosaic.tiles:
                row, col = divmod(tile.position, 2)
                canvas[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28] = images[tile.source_index]
            png = io.BytesIO()
            Image.fromarray(canvas, mode="L").save(png, format="PNG")
            archive.writestr(mosaic.filename, png.getvalue())
            names = sorted({FASHION_NAMES[t.digit] for t in mosaic.tiles})
            writer.writerow([mosaic.filename, "|".join(names)])
        archive.writestr("labels.csv", labels_csv.getvalue())
    return mosaics


def build(root: Path, which: str, samples: int | None = None) -> list[tuple[str, Path, str, str]]:
    """(name, upload file, base model, modality) of the data sets of `which` (text, image or all)."""
    demo = root / "demo"
    demo.mkdir(exist_ok=True)
    write_demo_data(demo)
    sets = []
    if which in ("text", "all"):
        movies = movie_samples()[:samples] if samples else movie_samples()
        sets.append(("movies (demo)", write_text_csv(root / MOVIES_CSV, movies), "minilm-l6", "text"))
        debtags = debtags_samples(samples or NUM_PACKAGES)
        sets.append(("debtags", write_text_csv(root / "debtags.csv", debtags), "minilm-l6", "text"))
    if which in ("image", "all"):
        sets.append(("digit mosaics (demo)", demo / MOSAICS_ZIP, "mobilenetv2-100", "image"))
        fashion = root / "fashion-mosaics.zip"
        write_fashion_mosaics(fashion)
        sets.append(("fashion mosaics", fashion, "mobilenetv2-100", "image"))
    return sets


def cap_budget(max_steps: int | None, min_steps: int | None) -> None:
    """Shrink every base model's step budget for this process (a CPU-sized study says so)."""
    import dataclasses

    from apl.training import budget

    if max_steps is None and min_steps is None:
        return
    catalog = budget.step_budget

    def capped(base_model: str) -> Any:
        bounds = catalog(base_model)
        return dataclasses.replace(
            bounds,
            max_steps=min(bounds.max_steps, max_steps or bounds.max_steps),
            min_steps=min(bounds.min_steps, min_steps or bounds.min_steps),
        )

    budget.step_budget = capped  # type: ignore[assignment]


def run_job(
    dataset_dir: Path,
    base_model: str,
    loss: str,
    epochs: int | None = None,
    learning_rate: float | None = None,
    head_init: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """One job with only dataset, base model (and loss), trained as the worker trains it.

    `epochs` set: the job as it was before step budgets (the base model's old epoch default);
    `learning_rate` set: another step size than the base model's default; `head_init` set:
    another start for the head than the default (the linear probe).
    """
    from apl.spec import JobSpec
    from apl.training import TrainConfig, train

    hyperparameters: dict[str, Any] = {"epochs": epochs} if epochs else {}
    if learning_rate is not None:
        hyperparameters["learning_rate"] = learning_rate
    if head_init is not None:
        hyperparameters["head_init"] = head_init
    if seed is not None:  # another split and initialisation
        hyperparameters["seed"] = seed
    spec = JobSpec(
        dataset_id="local", base_model=base_model, loss={"name": loss}, hyperparameters=hyperparameters
    )
    started = time.monotonic()
    result = train(TrainConfig.from_job_spec(spec, dataset_dir, device="cpu"))
    total = time.monotonic() - started
    assert result.baselines is not None and result.best_metrics is not None
    baselines = result.baselines
    scores = {key: score.map for key, score in baselines.scores.items()}
    best_baseline = max(scores.values())
    return {
        "loss": loss,
        "fine_tuned_map": result.best_metrics.map,
        "baselines": scores,
        "margin_over_probe": result.best_metrics.map - scores.get("linear_probe", float("nan")),
        "margin_over_best_baseline": result.best_metrics.map - best_baseline,
        "published": baselines.selected,
        "warnings": baselines.warnings,
        "comparison": baselines.comparison,
        "stop_reason": result.stop_reason,
        "stop_message": result.stop_message,
        "epochs": result.epochs_completed,
        "steps": result.history[-1].step if result.history else 0,
        "job_s": total,
        "baselines_s": baselines.time_s,
        "baselines_share": baselines.time_s / total,
        "hyperparameters": spec.hyperparameters.model_dump(mode="json"),
        "learning_rate_set": learning_rate is not None,
        "head_init": result.head_init,
        "best_step": result.best_metrics.step,
    }


def _head(run: dict[str, Any]) -> str:
    """How a result row's head started (rows from before `head_init` had a random head)."""
    return HEADS.get(run.get("head_init", "random"), "?")


def table(paths: list[Path]) -> str:
    """The docs/results.md table of one or more result files."""
    lines = [
        "| data set | samples / labels (rarest) | loss | head | fine-tuned | linear probe | TF-IDF "
        "| margin over best baseline | published | stopped (best step) | job | baselines |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for path in paths:
        for run in json.loads(path.read_text(encoding="utf-8")):
            tfidf = run["baselines"].get("tfidf")
            epochs = run["hyperparameters"]["epochs"]
            budget = f", {epochs} epochs" if epochs else ""
            if run.get("learning_rate_set"):
                budget += f", learning rate {run['hyperparameters']['learning_rate']:g}"
            seed = run["hyperparameters"].get("seed", 0)
            budget += f", seed {seed}" if seed else ""
            lines.append(
                f"| {run['dataset']}{budget} | {run['samples']} / {run['labels']} ({run['min_label_count']}) "
                f"| {run['loss']} | {_head(run)} "
                f"| {run['fine_tuned_map']:.3f} | {run['baselines']['linear_probe']:.3f} "
                f"| {f'{tfidf:.3f}' if tfidf is not None else '-'} | {run['margin_over_best_baseline']:+.3f} "
                f"| {run['published'].replace('_', ' ')} | {run['stop_reason']} after {run['steps']} steps"
                f"{f' ({best})' if (best := run.get('best_step')) is not None else ''} "
                f"| {run['job_s']:.0f} s | {run['baselines_s']:.0f} s ({100 * run['baselines_share']:.0f}%) |"
            )
    return "\n".join(lines)


def grid(paths: list[Path]) -> str:
    """The runs as one validation mAP per data set and loss (rows) and setting (columns).

    A setting is the head's start, the learning rate and the step cap; the linear probe's
    score closes each row, so a column reads against it.
    """
    cells: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(dict)
    probes: dict[tuple[str, str], float] = {}
    columns: list[str] = []
    for path in paths:
        for run in json.loads(path.read_text(encoding="utf-8")):
            hp = run["hyperparameters"]
            cap = f", {run['max_steps']} steps max" if run.get("max_steps") else ""
            column = f"{_head(run)} head, {hp['learning_rate']:g}{cap}"
            columns += [column] if column not in columns else []
            row = (f"{run['dataset']} ({run['samples']})", run["loss"])
            cells[row][column] = run["fine_tuned_map"]
            probes[row] = run["baselines"]["linear_probe"]
    lines = [
        "| data set | loss | " + " | ".join(columns) + " | linear probe |",
        "|---|---|" + "---:|" * (len(columns) + 1),
    ]
    for (name, loss), values in cells.items():
        shown = [f"{values[c]:.3f}" if c in values else "-" for c in columns]
        lines.append(f"| {name} | {loss} | " + " | ".join(shown) + f" | {probes[(name, loss)]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--only", choices=("text", "image", "all"), default="all")
    parser.add_argument("--losses", default="apl,bce")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--samples", type=int, default=None, help="keep this many samples per text set")
    parser.add_argument("--max-steps", type=int, default=None, help="cap the step budget (CPU-sized runs)")
    parser.add_argument("--min-steps", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="explicit epochs (the pre-budget jobs)")
    parser.add_argument("--learning-rate", type=float, default=None, help="instead of the base model's")
    parser.add_argument("--head-init", choices=("linear_probe", "random"), default=None)
    parser.add_argument("--seed", type=int, default=None, help="the jobs' seed (split and initialisation)")
    parser.add_argument("--sets", default=None, help="comma-separated data set names to run (default: all)")
    parser.add_argument("--table", nargs="*", type=Path, help="print the markdown table of result files")
    parser.add_argument("--grid", nargs="*", type=Path, help="print result files as data sets x settings")
    args = parser.parse_args()
    if args.table or args.grid:
        print(table(args.table) if args.table else grid(args.grid))
        return
    cap_budget(args.max_steps, args.min_steps)
    from api.ingest import ingest_dataset
    from apl.data import load_stored_dataset

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wanted = set(args.sets.split(",")) if args.sets else None
        for name, upload, base_model, modality in build(root, args.only, args.samples):
            if wanted is not None and name.split(" ")[0] not in wanted:
                continue
            stored = root / f"ds-{len(results)}-{modality}"
            ingest_dataset(upload, upload.name, stored)
            data = load_stored_dataset(stored)
            counts = np.nansum(data.targets, axis=0)
            about = {
                "dataset": name,
                "base_model": base_model,
                "samples": len(data),
                "labels": len(data.labels),
                "cardinality": float(np.nansum(data.targets) / len(data)),
                "min_label_count": int(counts.min()),
                "median_label_count": float(np.median(counts)),
            }
            for loss in args.losses.split(","):
                options = (args.epochs, args.learning_rate, args.head_init, args.seed)
                run = about | {"max_steps": args.max_steps} | run_job(stored, base_model, loss, *options)
                results.append(run)
                print(json.dumps(run), flush=True)
                args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
