"""Under-tagged variants of the demo sets: a seeded share of the training positives removed.

Real tags are under-given (a user who tags a film "comedy" rarely adds every other genre
that fits), and a loss that reads every absent tag as a true "no" learns to say "no". To
measure what the losses for missing labels (hill, splc) do about it, `aplserve demo-data DIR
--undertagged` (opt-in: three more data sets per demo set) writes for each demo set:

- `<name>-train.<ext>`: the training part (1 - UNDERTAG_TEST_SHARE of the samples), complete;
- `<name>-undertagged.<ext>`: the same samples with each positive removed with probability
  UNDERTAG_SHARE, at least one positive kept per sample (whoever tags gives one tag);
- `<name>-test.<ext>`: the held-out rest, complete: give it as `test_dataset_id`, so both
  variants are scored against the whole truth on the same samples;
- `<name>-undertagged-removed.json`: the answer key, every removed (sample, label).

Seeded, so the bytes are the same on every run.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from aplserve import demo_data

#: Share of the training positives removed, and share of the samples held out complete.
UNDERTAG_SHARE = 0.4
UNDERTAG_TEST_SHARE = 0.2
UNDERTAG_SEED = 2027

Sample = tuple[str, list[str]]


def undertag(
    samples: list[Sample], seed: int = UNDERTAG_SEED
) -> tuple[list[Sample], list[Sample], list[Sample], list[dict[str, object]]]:
    """(train complete, train under-tagged, test complete, removed cells) for `samples`."""
    import numpy as np

    rng = np.random.default_rng([seed, 27])
    test_rows = set(
        int(i) for i in rng.choice(len(samples), round(UNDERTAG_TEST_SHARE * len(samples)), replace=False)
    )
    train = [s for i, s in enumerate(samples) if i not in test_rows]
    test = [s for i, s in enumerate(samples) if i in test_rows]
    tagged, removed = [], []
    for row, (key, labels) in enumerate(train):
        drop = [label for label in labels if rng.random() < UNDERTAG_SHARE]
        if labels and len(drop) == len(labels):
            drop.remove(drop[int(rng.integers(len(drop)))])  # keep one tag
        tagged.append((key, [label for label in labels if label not in drop]))
        removed += [{"row": row, "key": key, "label": label} for label in drop]
    return train, tagged, test, removed


def _write_csv(path: Path, samples: list[Sample]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "labels"])
        writer.writerows((text, "|".join(labels)) for text, labels in samples)


def write_undertagged_movies(out_dir: Path, movies: list[Sample]) -> list[Path]:
    train, tagged, test, removed = undertag(movies)
    paths = [out_dir / f"movies-genres-{part}.csv" for part in ("train", "undertagged", "test")]
    for path, part in zip(paths, (train, tagged, test), strict=True):
        _write_csv(path, part)
    key = out_dir / "movies-genres-undertagged-removed.json"
    key.write_text(json.dumps(removed, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return [*paths, key]


def write_undertagged_mosaics(out_dir: Path) -> list[Path]:
    """The mosaics of `digits-mosaics-partial.zip` (more samples than the plain set), fully labelled.

    The PNGs are copied from that ZIP (written first by `write_demo_data`), not drawn again.
    """
    from sklearn.datasets import load_digits

    mosaics = demo_data.plan_mosaics(load_digits().target, demo_data.NUM_PARTIAL_MOSAICS, demo_data.SEED)
    train, tagged, test, removed = undertag([(m.filename, m.labels) for m in mosaics])
    paths = [out_dir / f"digits-mosaics-{part}.zip" for part in ("train", "undertagged", "test")]
    with zipfile.ZipFile(out_dir / demo_data.MOSAICS_PARTIAL_ZIP) as source:
        for path, part in zip(paths, (train, tagged, test), strict=True):
            _copy_mosaics(source, path, part)
    key = out_dir / "digits-mosaics-undertagged-removed.json"
    key.write_text(json.dumps(removed, indent=1) + "\n", encoding="utf-8")
    return [*paths, key]


def _copy_mosaics(source: zipfile.ZipFile, path: Path, part: list[Sample]) -> None:
    labels_csv = io.StringIO()
    writer = csv.writer(labels_csv, lineterminator="\n")
    writer.writerow(["filename", "labels"])
    with zipfile.ZipFile(path, "w") as archive:
        for filename, labels in part:
            demo_data._add_member(archive, filename, source.read(filename), zipfile.ZIP_STORED)
            writer.writerow([filename, "|".join(labels)])
        data = labels_csv.getvalue().encode("utf-8")
        demo_data._add_member(archive, "labels.csv", data, zipfile.ZIP_DEFLATED)
