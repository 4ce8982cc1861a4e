"""benchmarks/baseline_study.py: the offline data sets it builds and the results table (no training)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import baseline_study  # noqa: E402

DUMP = """Package: alpha
Description: a tiny editor
 It edits text.
 .
 Quickly.
Tag: role::program, use::editing, works-with::text

Package: beta
Description: a network tool
Tag: interface::commandline, protocol::http,
 use::downloading
"""


def test_apt_stanzas_join_continuations_and_descriptions_keep_the_long_part() -> None:
    stanzas = baseline_study._stanzas(DUMP)
    assert [s["Package"] for s in stanzas] == ["alpha", "beta"]
    assert stanzas[1]["Tag"] == "interface::commandline, protocol::http,\nuse::downloading"
    assert baseline_study._description(stanzas[0]["Description"]) == "a tiny editor. It edits text. Quickly."


def _fashion_source(root: Path) -> None:
    """Fashion-MNIST in its IDX layout: 20 items of 28x28, two of each class."""
    import gzip

    images = np.arange(20 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(20, 28, 28)
    labels = np.arange(20, dtype=np.uint8) % 10
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (20, 28, 28))
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    header = bytes([0, 0, 8, 1]) + (20).to_bytes(4, "big")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))


def test_fashion_mosaics_are_labelled_with_the_classes_they_show(tmp_path: Path, monkeypatch: Any) -> None:
    _fashion_source(tmp_path)
    monkeypatch.setattr(baseline_study, "FASHION_DIR", str(tmp_path))
    mosaics = baseline_study.write_fashion_mosaics(tmp_path / "f.zip", count=12, seed=0)
    with zipfile.ZipFile(tmp_path / "f.zip") as archive:
        rows = archive.read("labels.csv").decode().splitlines()[1:]
        assert len(rows) == len(mosaics) == 12
        for mosaic, row in zip(mosaics, rows, strict=True):
            name, labels = row.split(",")
            assert name == mosaic.filename and name in archive.namelist()
            shown = {baseline_study.FASHION_NAMES[tile.digit] for tile in mosaic.tiles}
            assert set(labels.split("|")) == shown and 1 <= len(shown) <= 3


def _run(**extra: Any) -> dict[str, Any]:
    return {
        "dataset": "debtags",
        "samples": 500,
        "labels": 30,
        "min_label_count": 5,
        "loss": "bce",
        "fine_tuned_map": 0.601,
        "baselines": {"linear_probe": 0.581, "tfidf": 0.491},
        "margin_over_best_baseline": 0.020,
        "published": "fine_tuned",
        "stop_reason": "no_improvement",
        "steps": 130,
        "job_s": 98.0,
        "baselines_s": 2.0,
        "baselines_share": 0.02,
        "hyperparameters": {"epochs": None, "learning_rate": 2e-4, "seed": 0},
        **extra,
    }


def test_the_table_names_the_head_the_best_step_and_what_differs_from_the_defaults(tmp_path: Path) -> None:
    runs = [
        _run(head_init="linear_probe", best_step=65),
        _run(head_init="random", hyperparameters={"epochs": None, "learning_rate": 5e-5, "seed": 1}),
        _run(learning_rate_set=True, hyperparameters={"epochs": 2, "learning_rate": 1e-3, "seed": 0}),
    ]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(runs))
    lines = baseline_study.table([path]).splitlines()
    assert lines[0].count("|") == lines[2].count("|") == 13
    assert lines[2].startswith("| debtags | 500 / 30 (5) | bce | probe | 0.601 | 0.581 | 0.491 | +0.020 |")
    assert "no_improvement after 130 steps (65) | 98 s | 2 s (2%) |" in lines[2]
    assert lines[3].startswith("| debtags, seed 1 |") and "| random |" in lines[3]
    assert lines[4].startswith("| debtags, 2 epochs, learning rate 0.001 |") and "| ? |" not in lines[4]


def test_the_grid_puts_one_setting_per_column_and_the_probe_last(tmp_path: Path) -> None:
    runs = [
        _run(head_init="linear_probe"),
        _run(head_init="random", fine_tuned_map=0.539),
        _run(head_init="random", max_steps=150, fine_tuned_map=0.159, loss="apl"),
    ]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(runs))
    lines = baseline_study.grid([path]).splitlines()
    assert lines[0] == (
        "| data set | loss | probe head, 0.0002 | random head, 0.0002 | random head, 0.0002, 150 steps max "
        "| linear probe |"
    )
    assert lines[2] == "| debtags (500) | bce | 0.601 | 0.539 | - | 0.581 |"
    assert lines[3] == "| debtags (500) | apl | - | - | 0.159 | 0.581 |"
