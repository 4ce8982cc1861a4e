"""The logistic-regression baseline: the sweep's own test split, real demo data, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from api.ingest import ingest_dataset
from apl.baseline import logistic_baseline
from apl.data import load_stored_dataset, split_test_indices
from apl.data.stored import StoredDataset
from aplserve.demo_data import MOVIES_CSV, MOVIES_JSONL, movie_samples, write_digit_mosaics, write_movies


def _chance_map(dataset: StoredDataset, test: tuple[int, ...]) -> float:
    """The mAP of a constant score: each label's positive rate on the test split."""
    targets = dataset.targets[list(test)]
    rates = targets.mean(axis=0)
    return float(np.mean(rates[rates > 0]))


@pytest.fixture(scope="module")
def movies(tmp_path_factory: pytest.TempPathFactory) -> StoredDataset:
    root = tmp_path_factory.mktemp("movies")
    write_movies(root / MOVIES_CSV, root / MOVIES_JSONL, movie_samples(count=400))
    ingest_dataset(root / MOVIES_CSV, MOVIES_CSV, root / "ds")
    return load_stored_dataset(root / "ds")


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory: pytest.TempPathFactory) -> StoredDataset:
    root = tmp_path_factory.mktemp("mosaics")
    write_digit_mosaics(root / "digits.zip", count=150)
    ingest_dataset(root / "digits.zip", "digits.zip", root / "ds")
    return load_stored_dataset(root / "ds")


def test_text_baseline_uses_the_sweeps_test_split_and_beats_chance(movies: StoredDataset) -> None:
    result = logistic_baseline(movies, seed=1, test_fraction=0.2, val_fraction=0.2)
    _, _, test = split_test_indices(movies.targets, 0.2, 0.2, 1)
    assert result.test_indices == tuple(int(i) for i in test)
    assert result.num_train + result.num_val + result.num_test == len(movies)
    assert result.features.startswith("TF-IDF") and result.c in (0.1, 1.0, 10.0)
    assert result.test_map > _chance_map(movies, result.test_indices) + 0.02
    again = logistic_baseline(movies, seed=1, test_fraction=0.2, val_fraction=0.2)
    assert again.test_map == result.test_map  # deterministic: the same split, the same fit


def test_pixel_baseline_reads_digits_from_the_pixels(mosaics: StoredDataset) -> None:
    result = logistic_baseline(mosaics, seed=0, test_fraction=0.2, val_fraction=0.2)
    _, _, test = split_test_indices(mosaics.targets, 0.2, 0.2, 0)
    assert result.features.startswith("raw pixels") and result.test_indices == tuple(int(i) for i in test)
    # Digits in fixed tile positions are nearly linearly separable from raw pixels.
    assert result.test_map > _chance_map(mosaics, result.test_indices) + 0.2
    other_seed = logistic_baseline(mosaics, seed=2, test_fraction=0.2, val_fraction=0.2)
    assert other_seed.test_indices != result.test_indices


def test_the_baseline_imports_no_torch() -> None:
    script = (
        "import sys; import apl.baseline\nassert 'torch' not in sys.modules, 'apl.baseline imported torch'\n"
    )
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
