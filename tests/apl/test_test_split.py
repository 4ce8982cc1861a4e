"""The held-out test split: drawn first and alike for every loss, scored once at the end, saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apl.data import load_stored_dataset, split_indices, split_test_indices
from apl.errors import DatasetError
from apl.metrics import f1_at_thresholds, mean_average_precision
from apl.predictions import SplitPredictions
from apl.spec import Hyperparameters, JobSpec, LossSpec
from apl.training import TrainConfig, TrainerCallback, train
from tests.apl.synthetic import write_text_dataset


def _targets(seed: int, n: int = 80, labels: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, labels)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_three_way_split_partitions_the_samples_and_keeps_labels_on_every_side(seed: int) -> None:
    targets = _targets(seed)
    train_idx, val_idx, test_idx = split_test_indices(targets, 0.2, 0.2, seed)
    joined = np.concatenate([train_idx, val_idx, test_idx])
    assert np.array_equal(np.sort(joined), np.arange(len(targets)))
    assert abs(len(test_idx) - 16) <= 3
    for label in range(targets.shape[1]):
        assert targets[test_idx, label].sum() >= 1 and targets[train_idx, label].sum() >= 1


def test_the_test_split_depends_only_on_the_seed_and_its_fraction() -> None:
    targets = _targets(1)
    first = split_test_indices(targets, 0.25, 0.2, 3)
    again = split_test_indices(targets, 0.25, 0.2, 3)
    other_val = split_test_indices(targets, 0.25, 0.3, 3)
    other_seed = split_test_indices(targets, 0.25, 0.2, 4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.array_equal(first[2], other_val[2])  # validation fraction does not move the test split
    assert not np.array_equal(first[2], other_seed[2])
    # The rest is split into train and validation exactly as a job without a test split would be.
    rest = np.sort(np.concatenate(first[:2]))
    train_rest, val_rest = split_indices(targets[rest], 0.2, 3)
    assert np.array_equal(rest[train_rest], first[0]) and np.array_equal(rest[val_rest], first[1])


def test_tiny_datasets_and_bad_fractions_are_refused() -> None:
    with pytest.raises(DatasetError):
        split_test_indices(np.ones((3, 1)), 0.2, 0.2, 0)
    with pytest.raises(DatasetError):
        split_test_indices(_targets(0), 1.0, 0.2, 0)
    with pytest.raises(DatasetError, match="fewer than 3"):
        split_test_indices(_targets(0, n=4), 0.5, 0.2, 0)


def test_job_spec_takes_one_kind_of_test_split() -> None:
    spec = JobSpec(dataset_id="d", base_model="m", test_fraction=0.2)
    assert spec.test_fraction == 0.2 and spec.test_dataset_id is None
    assert JobSpec(dataset_id="d", base_model="m").test_fraction is None
    with pytest.raises(ValueError, match="not both"):
        JobSpec(dataset_id="d", base_model="m", test_fraction=0.2, test_dataset_id="t")
    for bad in (0.0, 0.6, float("nan")):
        with pytest.raises(ValueError):
            JobSpec(dataset_id="d", base_model="m", test_fraction=bad)


class _Seen(TrainerCallback):
    """Records the train/validation sizes the loop announces."""

    def on_train_begin(self, info) -> None:  # type: ignore[no-untyped-def]
        self.info = info


def _config(dataset: Path, model: str, loss: str, **extra: object) -> TrainConfig:
    hp = Hyperparameters(epochs=2, batch_size=8, learning_rate=1e-2, max_length=32, seed=0)
    return TrainConfig(
        dataset_dir=dataset,
        base_model=model,
        loss=LossSpec(name=loss),  # type: ignore[arg-type]
        hyperparameters=hp,
        device="cpu",
        **extra,
    )  # type: ignore[arg-type]


def test_training_scores_the_best_weights_once_on_the_held_out_split(
    large_text_dataset: Path, tiny_bert: str, tmp_path: Path
) -> None:
    seen = _Seen()
    result = train(_config(large_text_dataset, tiny_bert, "bce", test_fraction=0.25), [seen])
    data = load_stored_dataset(large_text_dataset)
    train_idx, val_idx, test_idx = split_test_indices(data.targets, 0.25, 0.2, 0)
    assert (seen.info.num_train, seen.info.num_val) == (len(train_idx), len(val_idx))
    test = result.test
    assert test is not None and test.source == "fraction"
    assert np.array_equal(test.indices, test_idx)
    assert np.array_equal(test.targets, data.targets[test_idx].astype(np.uint8))
    # The metrics are those of the stored probabilities at the validation-tuned thresholds.
    assert test.map == pytest.approx(mean_average_precision(test.probs, test.targets))
    thresholds = np.array([result.thresholds[name] for name in result.labels])
    assert np.array_equal(test.thresholds, thresholds)
    micro, macro = f1_at_thresholds(test.probs, test.targets, thresholds)
    assert (test.micro_f1, test.macro_f1) == pytest.approx((micro, macro))
    # Another loss with the same seed sees the very same samples, in the same split.
    other = train(_config(large_text_dataset, tiny_bert, "apl", test_fraction=0.25))
    assert other.test is not None and np.array_equal(other.test.indices, test.indices)
    assert not np.allclose(other.test.probs, test.probs)
    # Saved and read back unchanged.
    path = tmp_path / "p" / "test.npz"
    test.save(path)
    back = SplitPredictions.load(path)
    assert np.array_equal(back.probs, test.probs) and np.array_equal(back.indices, test.indices)
    assert (back.map, back.macro_f1, back.labels) == (test.map, test.macro_f1, test.labels)
    assert back.source == "fraction"


def test_a_separate_test_dataset_is_scored_whole_and_must_share_the_labels(
    text_dataset: Path, tiny_bert: str, tmp_path: Path
) -> None:
    held_out = write_text_dataset(tmp_path / "held-out", n=20, seed=5)
    result = train(_config(text_dataset, tiny_bert, "apl", test_dataset_dir=held_out))
    assert result.test is not None and result.test.source == "dataset"
    assert result.test.num_samples == 20 and np.array_equal(result.test.indices, np.arange(20))
    assert result.test.metrics()["num_samples"] == 20
    other_labels = tmp_path / "other-labels"
    write_text_dataset(other_labels, n=20, seed=5)
    (other_labels / "labels.json").write_text(json.dumps(["animal", "color", "food", "extra"]))
    with pytest.raises(DatasetError, match="labels differ"):
        train(_config(text_dataset, tiny_bert, "apl", test_dataset_dir=other_labels))


def test_without_a_test_split_nothing_is_scored(text_dataset: Path, tiny_bert: str) -> None:
    assert train(_config(text_dataset, tiny_bert, "apl")).test is None
