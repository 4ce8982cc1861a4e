"""The stored-dataset reader and the multi-label train/validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apl.data import load_stored_dataset, split_indices
from apl.data.split import MIN_POSITIVES_FOR_GUARANTEE
from apl.errors import DatasetError


def _random_targets(seed: int, n: int, labels: int, density: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, labels)) < density).astype(np.float32)
    # A few rare labels: exactly 2 and exactly 1 positive.
    targets[:, -1] = 0
    targets[rng.choice(n, 2, replace=False), -1] = 1
    targets[:, -2] = 0
    targets[rng.integers(n), -2] = 1
    return targets


@pytest.mark.parametrize("seed", range(12))
def test_split_covers_every_sample_once_and_guarantees_rare_labels(seed: int) -> None:
    targets = _random_targets(seed, n=30 + seed, labels=8, density=0.15)
    train, val = split_indices(targets, 0.2, seed)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(targets)))
    positives = targets.sum(axis=0)
    for label in np.flatnonzero(positives >= MIN_POSITIVES_FOR_GUARANTEE):
        assert targets[val, label].sum() >= 1, f"label {label} has no validation positive"
        assert targets[train, label].sum() >= 1, f"label {label} has no training positive"
    assert abs(len(val) - 0.2 * len(targets)) <= 3


def test_split_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    targets = _random_targets(0, n=60, labels=6, density=0.3)
    first = split_indices(targets, 0.25, 7)
    again = split_indices(targets, 0.25, 7)
    other = split_indices(targets, 0.25, 8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


def test_split_stratifies_label_frequencies() -> None:
    targets = _random_targets(3, n=200, labels=5, density=0.3)
    _, val = split_indices(targets, 0.25, 0)
    frequent = targets[:, :3]
    ratio = frequent[val].sum(axis=0) / frequent.sum(axis=0)
    assert np.all(np.abs(ratio - 0.25) < 0.05)


def test_split_handles_unlabelled_samples_and_tiny_datasets() -> None:
    targets = np.zeros((5, 2), dtype=np.float32)
    train, val = split_indices(targets, 0.2, 0)
    assert len(train) == 4 and len(val) == 1
    train, val = split_indices(np.array([[1.0], [1.0]]), 0.5, 0)
    assert len(train) == len(val) == 1
    with pytest.raises(DatasetError):
        split_indices(np.ones((1, 2)), 0.2, 0)


def test_load_text_dataset(text_dataset: Path) -> None:
    data = load_stored_dataset(text_dataset)
    assert data.modality == "text"
    assert data.labels == ["animal", "color", "food"]
    assert data.targets.shape == (48, 3)
    assert data.targets.dtype == np.float32
    first = json.loads((text_dataset / "samples.jsonl").read_text().splitlines()[0])
    assert data.inputs[0] == first["text"]
    assert [data.labels[j] for j in np.flatnonzero(data.targets[0])] == first["labels"]


def test_load_image_dataset_resolves_paths_inside_images(image_dataset: Path) -> None:
    data = load_stored_dataset(image_dataset)
    assert data.modality == "image"
    assert all(Path(p).is_file() and Path(p).is_relative_to(image_dataset / "images") for p in data.inputs)


def _write(root: Path, lines: list[object], labels: list[str]) -> Path:
    root.mkdir(exist_ok=True)
    (root / "samples.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (root / "labels.json").write_text(json.dumps(labels))
    return root


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"text": "x", "labels": ["nope"]}], "not in labels.json"),
        ([{"image": "../secret.png", "labels": []}], "leaves images/"),
        ([{"image": "images/../../x.png", "labels": []}], "leaves images/"),
        ([{"text": "x", "labels": []}, {"image": "images/a.png", "labels": []}], "mixes"),
        ([{"labels": ["a"]}], "neither"),
        ([{"text": "x", "labels": "a"}], "list of names"),
        ([], "no samples"),
    ],
)
def test_invalid_datasets_raise_dataset_error(tmp_path: Path, lines: list[object], message: str) -> None:
    root = _write(tmp_path / "d", lines, ["a"])
    with pytest.raises(DatasetError, match=message) as info:
        load_stored_dataset(root)
    assert info.value.code == DatasetError.code


def test_missing_files_raise_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"labels\.json"):
        load_stored_dataset(tmp_path)
