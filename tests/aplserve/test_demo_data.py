"""Demo datasets: built offline, byte-for-byte reproducible, ingested cleanly, and labelled
with exactly what was drawn into each mosaic or flagged in the movies table."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from api.ingest import ingest_dataset
from apl.data import load_stored_dataset
from aplserve.demo_data import (
    DIGIT_NAMES,
    GRID,
    MOSAICS_FLIPS,
    MOSAICS_PARTIAL_ZIP,
    MOSAICS_ZIP,
    MOVIE_GENRES,
    MOVIES_CSV,
    MOVIES_FLIPS,
    MOVIES_JSONL,
    MOVIES_PARTIAL_CSV,
    NUM_MOSAICS,
    NUM_PARTIAL_MOSAICS,
    TILE_SCALE,
    _movie_rows,
    demo_data_command,
    digit_tile,
    plan_mosaics,
    write_demo_data,
    write_digit_mosaics,
)
from aplserve.demo_undertagged import UNDERTAG_SHARE, UNDERTAG_TEST_SHARE

EXPECTED_FILES = [MOSAICS_ZIP, MOVIES_CSV, MOVIES_JSONL, MOVIES_PARTIAL_CSV, MOVIES_FLIPS]
EXPECTED_FILES += [MOSAICS_PARTIAL_ZIP, MOSAICS_FLIPS]
#: Written with --undertagged only (opt-in: a tool that uploads every file would train them all).
UNDERTAGGED_FILES = [f"movies-genres-{part}.csv" for part in ("train", "undertagged", "test")]
UNDERTAGGED_FILES += ["movies-genres-undertagged-removed.json"]
UNDERTAGGED_FILES += [f"digits-mosaics-{part}.zip" for part in ("train", "undertagged", "test")]
UNDERTAGGED_FILES += ["digits-mosaics-undertagged-removed.json"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    written = write_demo_data(out, undertagged=True)
    elapsed = time.perf_counter() - start
    assert [p.name for p in written] == EXPECTED_FILES + UNDERTAGGED_FILES
    return out, elapsed


def test_demo_data_is_small_fast_and_reproducible(demo_dir: tuple[Path, float], tmp_path: Path) -> None:
    out, elapsed = demo_dir
    assert elapsed < 10, f"generation took {elapsed:.1f}s"
    assert sum((out / name).stat().st_size for name in EXPECTED_FILES + UNDERTAGGED_FILES) < 2 * 1024 * 1024
    again = write_demo_data(tmp_path / "again")  # the default: no under-tagged variants
    assert [path.name for path in again] == EXPECTED_FILES
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(EXPECTED_FILES)
    for path in again:
        assert path.read_bytes() == (out / path.name).read_bytes(), f"{path.name} differs between runs"


@pytest.mark.parametrize(
    ("filename", "modality", "num_samples", "labels"),
    [
        (MOSAICS_ZIP, "image", 300, sorted(DIGIT_NAMES)),
        (MOVIES_CSV, "text", 1500, sorted(genre.lower() for genre in MOVIE_GENRES)),
        (MOVIES_JSONL, "text", 1500, sorted(genre.lower() for genre in MOVIE_GENRES)),
    ],
)
def test_demo_files_ingest_cleanly(
    demo_dir: tuple[Path, float],
    tmp_path: Path,
    filename: str,
    modality: str,
    num_samples: int,
    labels: list[str],
) -> None:
    out, _ = demo_dir
    result = ingest_dataset(out / filename, filename, tmp_path / "ds")
    assert (result.modality, result.num_samples, result.labels) == (modality, num_samples, labels)
    # The one warning a demo file earns: a label too rare to tune a threshold on the default
    # validation split (the movies' 'short'), which the upload says instead of hiding.
    thin = [label for label, count in result.label_counts.items() if round(count * 0.2) < 5]
    expected = ["fewer than 5 validation samples each"] if thin else []
    assert [w for w in result.warnings if "validation samples each" not in w] == []
    assert len(result.warnings) == len(expected)
    assert all(f"'{label}'" in " ".join(result.warnings) for label in thin)
    assert 1.2 < result.label_cardinality < 2.5  # genuinely multi-label
    assert min(result.label_counts.values()) >= 10


def test_mosaic_labels_match_the_digits_drawn(tmp_path: Path) -> None:
    path = tmp_path / MOSAICS_ZIP
    mosaics = write_digit_mosaics(path)
    digits = load_digits()
    side = 8 * TILE_SCALE
    with zipfile.ZipFile(path) as archive:
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("labels.csv"), encoding="utf-8")))
        assert [row["filename"] for row in rows] == [m.filename for m in mosaics]
        for mosaic, row in zip(mosaics, rows, strict=True):
            drawn = {tile.digit for tile in mosaic.tiles}
            assert 1 <= len(drawn) <= 3
            assert all(digits.target[tile.source_index] == tile.digit for tile in mosaic.tiles)
            assert row["labels"].split("|") == sorted(DIGIT_NAMES[d] for d in drawn)
            pixels = np.asarray(Image.open(archive.open(mosaic.filename)))
            assert pixels.shape == (GRID * side, GRID * side)
            tiles = {tile.position: tile for tile in mosaic.tiles}
            for position in range(GRID * GRID):
                r, c = divmod(position, GRID)
                region = pixels[r * side : (r + 1) * side, c * side : (c + 1) * side]
                if position in tiles:
                    assert np.array_equal(region, digit_tile(digits.images[tiles[position].source_index]))
                else:
                    assert not region.any()  # blank tile
    assert any(len(m.tiles) < GRID * GRID for m in mosaics)  # some tiles are blank
    assert {len({t.digit for t in m.tiles}) for m in mosaics} == {1, 2, 3}


def test_movie_labels_are_the_genre_flags_of_the_source_table(demo_dir: tuple[Path, float]) -> None:
    out, _ = demo_dir
    flags: dict[str, set[tuple[str, ...]]] = {}
    for row in _movie_rows():
        genres = tuple(g.lower() for g in MOVIE_GENRES if row[g] == "1")
        flags.setdefault(f"{row['title'].strip()} ({row['year']})", set()).add(genres)
    with (out / MOVIES_CSV).open(encoding="utf-8", newline="") as f:
        csv_rows = [(r["text"], r["labels"].split("|")) for r in csv.DictReader(f)]
    jsonl_rows = [
        (o["text"], o["labels"])
        for o in map(json.loads, (out / MOVIES_JSONL).read_text("utf-8").splitlines())
    ]
    assert csv_rows == jsonl_rows
    assert len({text for text, _ in csv_rows}) > 1400
    for text, labels in csv_rows:
        assert tuple(labels) in flags[text], text


@pytest.mark.parametrize("flag", [[], ["--undertagged"]])
def test_demo_data_command_writes_and_lists_the_files(
    demo_dir: tuple[Path, float], tmp_path: Path, flag: list[str]
) -> None:
    app = typer.Typer()
    app.command("demo-data")(demo_data_command)
    app.command("other")(lambda: None)  # two commands, so Typer keeps the subcommand name
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "out"), *flag])
    assert result.exit_code == 0, result.output
    expected = EXPECTED_FILES + (UNDERTAGGED_FILES if flag else [])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected)
    for name in expected:
        assert name in result.output
    for name in UNDERTAGGED_FILES:  # the same bytes as write_demo_data's
        if flag:
            assert (tmp_path / "out" / name).read_bytes() == (demo_dir[0] / name).read_bytes()
    datasets = [n for n in expected if n.endswith((".csv", ".jsonl", ".zip"))]
    assert len(datasets) == (11 if flag else 5)  # what a tool that uploads every file would train


def test_partial_movies_hide_a_third_of_cells_and_plant_listed_flips(
    demo_dir: tuple[Path, float], tmp_path: Path
) -> None:
    out, _ = demo_dir
    result = ingest_dataset(out / MOVIES_PARTIAL_CSV, MOVIES_PARTIAL_CSV, tmp_path / "partial")
    cells = result.num_samples * len(result.labels)
    assert 0.27 < result.unknown_cells / cells < 0.33
    with (out / MOVIES_CSV).open(encoding="utf-8") as handle:
        full = [row["labels"].split("|") if row["labels"] else [] for row in csv.DictReader(handle)]
    with (out / MOVIES_PARTIAL_CSV).open(encoding="utf-8") as handle:
        partial = list(csv.DictReader(handle))
    flips = json.loads((out / MOVIES_FLIPS).read_text())
    assert len(flips) == round(0.03 * len(full))
    flipped = {flip["row"]: flip for flip in flips}
    for i, row in enumerate(partial):
        given = set(row["labels"].split("|")) - {""}
        unknown = set(row["unknown"].split("|")) - {""}
        known_truth = set(full[i]) - unknown
        if i in flipped:
            assert flipped[i]["label"] not in unknown
            assert given ^ known_truth == {flipped[i]["label"]}
            assert (flipped[i]["label"] in known_truth) == flipped[i]["was"]
        else:
            assert given == known_truth


def _zip_rows(path: Path) -> dict[str, dict[str, str]]:
    with zipfile.ZipFile(path) as archive:
        text = archive.read("labels.csv").decode("utf-8")
    return {row["filename"]: row for row in csv.DictReader(io.StringIO(text))}


def test_partial_mosaics_extend_the_plain_ones_and_plant_listed_flips(
    demo_dir: tuple[Path, float], tmp_path: Path
) -> None:
    out, _ = demo_dir
    result = ingest_dataset(out / MOSAICS_PARTIAL_ZIP, MOSAICS_PARTIAL_ZIP, tmp_path / "partial")
    assert result.num_samples == NUM_PARTIAL_MOSAICS and result.labels == sorted(DIGIT_NAMES)
    assert 0.27 < result.unknown_cells / (result.num_samples * len(result.labels)) < 0.33
    plain, partial = _zip_rows(out / MOSAICS_ZIP), _zip_rows(out / MOSAICS_PARTIAL_ZIP)
    assert len(plain) == NUM_MOSAICS and set(plain) <= set(partial)  # the first mosaics are the same
    with zipfile.ZipFile(out / MOSAICS_ZIP) as a, zipfile.ZipFile(out / MOSAICS_PARTIAL_ZIP) as b:
        name = next(iter(plain))
        assert a.read(name) == b.read(name)
    flips = {flip["filename"]: flip for flip in json.loads((out / MOSAICS_FLIPS).read_text())}
    assert len(flips) == round(0.03 * NUM_PARTIAL_MOSAICS)
    truth = {m.filename: set(m.labels) for m in plan_mosaics(load_digits().target, NUM_PARTIAL_MOSAICS)}
    for filename, row in partial.items():
        given = set(row["labels"].split("|")) - {""}
        known_truth = truth[filename] - (set(row["unknown"].split("|")) - {""})
        flip = flips.get(filename)
        expected = known_truth ^ {flip["label"]} if flip else known_truth
        assert given == expected, filename


@pytest.mark.parametrize(("name", "ext"), [("movies-genres", "csv"), ("digits-mosaics", "zip")])
def test_undertagged_variants_remove_listed_training_positives_and_keep_the_test_complete(
    demo_dir: tuple[Path, float], tmp_path: Path, name: str, ext: str
) -> None:
    out, _ = demo_dir
    parts = {
        part: ingest_dataset(out / f"{name}-{part}.{ext}", f"{name}-{part}.{ext}", tmp_path / part)
        for part in ("train", "undertagged", "test")
    }
    full, tagged, test = (load_stored_dataset(tmp_path / part) for part in ("train", "undertagged", "test"))

    def keys(inputs: list[str]) -> list[str]:  # image paths lie under each dataset's own folder
        return [Path(i).name for i in inputs]

    assert keys(full.inputs) == keys(tagged.inputs) and not set(keys(full.inputs)) & set(keys(test.inputs))
    total = len(full) + len(test)
    assert len(test) == round(UNDERTAG_TEST_SHARE * total)
    removed = json.loads((out / f"{name}-undertagged-removed.json").read_text())
    assert all(tagged.targets[r["row"], tagged.labels.index(r["label"])] == 0 for r in removed)
    assert all(full.targets[r["row"], full.labels.index(r["label"])] == 1 for r in removed)
    # Removing exactly the listed cells turns the complete training part into the under-tagged one.
    restored = tagged.targets.copy()
    for r in removed:
        restored[r["row"], tagged.labels.index(r["label"])] = 1
    assert (restored == full.targets).all()
    share = len(removed) / full.targets.sum()
    assert 0.2 < share <= UNDERTAG_SHARE + 0.05
    assert (tagged.targets.sum(axis=1) >= 1).all()  # every sample keeps a tag
    assert parts["test"].label_counts == {
        label: int(count) for label, count in zip(test.labels, test.targets.sum(axis=0), strict=True)
    }
