"""Partial labels at upload: the `unknown` column (CSV, ZIP labels.csv) and key (JSONL).

A label both given and unknown on one sample is refused naming the line; unknown names that are
no label of the dataset are dropped with a warning; the dataset reports its unknown cells; the
stored form holds `unknown` only where a sample has some, so training reads NaN cells there.
A job whose training split leaves a label unknown everywhere is refused at creation.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from api.ingest import ingest_dataset
from apl.data import job_split, load_stored_dataset, unannotated_labels
from core.errors import AppError
from tests.api.conftest import JobPoster, Uploader, assert_problem

ROWS: list[tuple[str, str, str]] = [
    ("rocket orbit", "space", "music"),
    ("guitar drum", "music", ""),
    ("oven flour", "cooking", "space|music"),
    ("planet melody", "space|music", ""),
    ("spice recipe", "cooking", ""),
    ("astronaut concert", "space|music", "cooking"),
    ("flour orbit", "cooking|space", ""),
    ("drum recipe", "music|cooking", "space"),
    ("melody", "music", "cooking"),
    ("oven", "cooking", ""),
    ("rocket", "space", "cooking|music"),
    ("concert", "music", ""),
]
#: Unknown cells of ROWS: one per name in the third column.
UNKNOWN_CELLS = sum(len(u.split("|")) for _, _, u in ROWS if u)


def partial_csv(rows: list[tuple[str, str, str]] = ROWS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "labels", "unknown"])
    writer.writerows(rows)
    return out.getvalue().encode()


def partial_jsonl(rows: list[tuple[str, str, str]] = ROWS) -> bytes:
    lines = [
        {"text": t, "labels": [x for x in labels.split("|") if x], "unknown": [x for x in u.split("|") if x]}
        for t, labels, u in rows
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def partial_zip(rows: list[tuple[str, str, str]] = ROWS) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["filename", "labels", "unknown"])
        for index, (_, labels, unknown) in enumerate(rows):
            png = io.BytesIO()
            Image.new("L", (8, 8), index * 9).save(png, format="PNG")
            archive.writestr(f"img/{index:02d}.png", png.getvalue())
            writer.writerow([f"img/{index:02d}.png", labels, unknown])
        archive.writestr("labels.csv", table.getvalue())
    return buffer.getvalue()


BUILDERS = {"data.csv": partial_csv, "data.jsonl": partial_jsonl, "data.zip": partial_zip}


@pytest.mark.parametrize("filename", sorted(BUILDERS))
def test_unknown_cells_are_counted_and_stored_as_nan(filename: str, tmp_path: Path) -> None:
    upload = tmp_path / filename
    upload.write_bytes(BUILDERS[filename]())
    result = ingest_dataset(upload, filename, tmp_path / "ds")
    assert result.unknown_cells == UNKNOWN_CELLS == 8
    assert result.unknown_counts == {"cooking": 3, "music": 3, "space": 2}
    assert result.label_counts == {"cooking": 5, "music": 6, "space": 5}
    stored = load_stored_dataset(tmp_path / "ds")
    assert int(np.isnan(stored.targets).sum()) == UNKNOWN_CELLS
    column = stored.labels.index("music")
    assert np.isnan(stored.targets[0, column]) and stored.targets[1, column] == 1.0
    assert stored.positive_counts == [5.0, 6.0, 5.0]
    samples = [json.loads(line) for line in (tmp_path / "ds" / "samples.jsonl").read_text().splitlines()]
    assert "unknown" not in samples[1] and samples[2]["unknown"] == ["music", "space"]


def test_fully_labelled_upload_stores_no_unknown_key(tmp_path: Path) -> None:
    rows = [(t, labels, "") for t, labels, _ in ROWS]
    upload = tmp_path / "data.csv"
    upload.write_bytes(partial_csv(rows))
    result = ingest_dataset(upload, "data.csv", tmp_path / "ds")
    assert result.unknown_cells == 0 and result.unknown_counts == {}
    assert "unknown" not in (tmp_path / "ds" / "samples.jsonl").read_text()


@pytest.mark.parametrize(
    ("filename", "where"),
    [("data.csv", "line 5"), ("data.jsonl", "line 4"), ("data.zip", "labels.csv line 5")],
)
def test_label_both_given_and_unknown_is_refused_naming_the_line(
    filename: str, where: str, tmp_path: Path
) -> None:
    rows = list(ROWS)
    rows[3] = ("planet melody", "space|music", "music")  # CSV line 5 (header is 1), JSONL line 4
    upload = tmp_path / filename
    upload.write_bytes(BUILDERS[filename](rows))
    with pytest.raises(AppError) as caught:
        ingest_dataset(upload, filename, tmp_path / "ds")
    assert caught.value.status == 422 and caught.value.code == "label_known_and_unknown"
    assert caught.value.detail.startswith(f"{where}:") and "'music'" in caught.value.detail
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("filename", sorted(BUILDERS))
def test_unknown_names_that_are_no_label_warn_and_are_dropped(filename: str, tmp_path: Path) -> None:
    rows = list(ROWS)
    rows[1] = ("guitar drum", "music", "sport|space")
    upload = tmp_path / filename
    upload.write_bytes(BUILDERS[filename](rows))
    result = ingest_dataset(upload, filename, tmp_path / "ds")
    assert any("'sport'" in note and "no sample" in note for note in result.warnings)
    assert "sport" not in result.unknown_counts and result.unknown_cells == UNKNOWN_CELLS + 1
    stored = load_stored_dataset(tmp_path / "ds")  # reads: the stray name is not stored
    assert int(np.isnan(stored.targets).sum()) == UNKNOWN_CELLS + 1


def test_jsonl_unknown_must_be_a_list_of_strings(tmp_path: Path) -> None:
    upload = tmp_path / "data.jsonl"
    lines = partial_jsonl().decode().splitlines()
    lines[2] = json.dumps({"text": "oven flour", "labels": ["cooking"], "unknown": "space"})
    upload.write_text("\n".join(lines) + "\n")
    with pytest.raises(AppError) as caught:
        ingest_dataset(upload, "data.jsonl", tmp_path / "ds")
    assert caught.value.code == "invalid_json" and caught.value.detail.startswith("line 3:")


def test_dataset_reports_unknown_cells_over_http(upload: Uploader, alice: dict[str, str]) -> None:
    created = upload(alice, partial_csv(), filename="partial.csv")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["unknown_cells"] == UNKNOWN_CELLS
    assert body["unknown_counts"] == {"cooking": 3, "music": 3, "space": 2}
    clash = list(ROWS)
    clash[3] = ("planet melody", "space|music", "music")
    assert_problem(upload(alice, partial_csv(clash), filename="clash.csv"), 422, "label_known_and_unknown")
    plain = upload(alice, filename="plain.csv").json()
    assert plain["unknown_cells"] == 0 and plain["unknown_counts"] == {}


def blank_in_training_rows(tmp_path: Path) -> tuple[bytes, float]:
    """A CSV where label 'rare' has one positive and is unknown elsewhere, and a val_fraction
    that sends that positive to validation (found with the split the job uses)."""
    rows = [(t, labels, "rare") for t, labels, _ in ROWS]
    rows[0] = ("rocket orbit rare", "space|rare", "")
    content = partial_csv(rows)
    (tmp_path / "rare.csv").write_bytes(content)
    ingest_dataset(tmp_path / "rare.csv", "rare.csv", tmp_path / "rare")
    stored = load_stored_dataset(tmp_path / "rare")
    for fraction in (0.2, 0.5, 0.6, 0.7, 0.8):
        train, _, _ = job_split(stored.targets, fraction, 0)
        if unannotated_labels(stored.targets, train) == [stored.labels.index("rare")]:
            assert fraction != 0.2, "the default split should keep the positive in training"
            return content, fraction
    raise AssertionError("no val_fraction puts the lone positive in validation")


def test_job_refused_when_a_label_is_unknown_on_every_training_sample(
    upload: Uploader, alice: dict[str, str], post_job: JobPoster, tmp_path: Path
) -> None:
    content, fraction = blank_in_training_rows(tmp_path)
    dataset: dict[str, Any] = upload(alice, content, filename="rare.csv").json()
    response = post_job(alice, dataset["id"], hyperparameters={"val_fraction": fraction, "seed": 0})
    body = assert_problem(response, 422, "label_unknown_in_training")
    assert "'rare'" in body["detail"]
    fine = post_job(alice, dataset["id"], hyperparameters={"seed": 0})
    assert fine.status_code == 202, fine.text
