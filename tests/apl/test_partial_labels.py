"""Partial labels in `apl`: unknown cells (NaN targets) count nowhere, and suspect labels are found.

- every loss preset: the loss and gradient with unknown cells equal those computed on the known
  cells alone;
- metrics, thresholds, calibration, the evaluation and the sweep statistics equal their values
  on the known cells only;
- stored predictions keep the known-cell mask;
- the split keeps known positives on both sides, and a label unknown on every training
  sample is named;
- `apl.label_issues` ranks planted label flips at the top of a synthetic split;
- a real (tiny) training run on a partially labelled dataset finishes with masked validation
  predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from apl.calibration import expected_calibration_error, fit_temperatures
from apl.data import job_split, load_stored_dataset, unannotated_labels
from apl.label_issues import rank_label_issues
from apl.losses import build_loss
from apl.metrics import per_class_average_precision, score_validation
from apl.predictions import SplitPredictions
from apl.spec import LOSS_PRESETS, Hyperparameters, LossSpec
from apl.stats import Scored, metric_value
from apl.thresholds import choose_thresholds
from apl.training import TrainConfig, train
from tests.apl.synthetic import write_text_dataset


def partial_targets(n: int = 64, k: int = 5, seed: int = 0, unknown: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.4).astype(np.float32)
    targets[rng.random((n, k)) < unknown] = np.nan
    return targets


@pytest.mark.parametrize("preset", sorted(LOSS_PRESETS))
def test_masked_loss_and_gradient_equal_the_known_cells_alone(preset: str) -> None:
    targets = torch.from_numpy(partial_targets(24, 6, seed=1))
    known = ~torch.isnan(targets)
    logits = torch.randn(24, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    loss_fn = build_loss(LossSpec(name=preset), reduction="sum")

    masked_logits = logits.clone().requires_grad_(True)
    masked = loss_fn(masked_logits, targets.to(torch.float64))
    masked.backward()

    known_logits = logits.clone().requires_grad_(True)
    alone = loss_fn(known_logits[known], targets[known].to(torch.float64))
    alone.backward()

    assert torch.isfinite(masked) and float(masked.detach()) > 0
    torch.testing.assert_close(masked, alone)
    assert masked_logits.grad is not None and known_logits.grad is not None
    torch.testing.assert_close(masked_logits.grad, known_logits.grad)
    assert torch.all(masked_logits.grad[~known] == 0)


def _known_only(values: np.ndarray, targets: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    rows = ~np.isnan(targets[:, j])
    return values[rows, j], targets[rows, j]


def test_metrics_thresholds_and_calibration_ignore_unknown_cells() -> None:
    targets = partial_targets(80, 4, seed=3)
    rng = np.random.default_rng(4)
    filled = np.nan_to_num(targets, nan=0.0)
    probs = np.clip(0.6 * filled + 0.4 * rng.random(targets.shape), 0, 1)
    # The unknown cells hold scores that would wreck every metric if read as negatives.
    probs[np.isnan(targets)] = 0.99
    ap = per_class_average_precision(probs, targets)
    choice = choose_thresholds(probs, targets, "max_f1")
    for j in range(targets.shape[1]):
        p, t = _known_only(probs, targets, j)
        alone = per_class_average_precision(p[:, None], t[:, None])
        assert ap[j] == pytest.approx(alone[0])
        assert choice.values[j] == pytest.approx(
            choose_thresholds(p[:, None], t[:, None], "max_f1").values[0]
        )
    scores = score_validation(probs, targets, ["a", "b", "c", "d"])
    explicit = score_validation(probs, filled, ["a", "b", "c", "d"], mask=~np.isnan(targets))
    assert scores == explicit
    unmasked = score_validation(probs, filled, ["a", "b", "c", "d"])
    assert scores.map > unmasked.map  # reading unknown cells as negatives is what the mask prevents
    logits = np.log(probs.clip(1e-6, 1 - 1e-6) / (1 - probs.clip(1e-6, 1 - 1e-6)))
    assert np.allclose(
        fit_temperatures(logits, targets), fit_temperatures(logits, filled, mask=~np.isnan(targets))
    )
    known = ~np.isnan(targets)
    assert expected_calibration_error(probs, targets) == pytest.approx(
        expected_calibration_error(probs[known][:, None], filled[known][:, None])
    )


def test_sweep_statistics_and_stored_predictions_keep_the_mask(tmp_path: Path) -> None:
    targets = partial_targets(50, 3, seed=5)
    known = ~np.isnan(targets)
    binary = (np.nan_to_num(targets) > 0.5).astype(np.uint8)
    probs = np.random.default_rng(6).random(targets.shape).astype(np.float32)
    thresholds = np.full(3, 0.5)
    scored = Scored(probs, binary, thresholds, known)
    reference = score_validation(probs, targets, ["a", "b", "c"])
    assert metric_value("map", scored) == pytest.approx(reference.map)
    predictions = SplitPredictions(
        "test",
        ["a", "b", "c"],
        probs,
        binary,
        thresholds,
        np.arange(50),
        "fraction",
        0.0,
        0.0,
        0.0,
        known=known,
    )
    predictions.save(tmp_path / "p.npz")
    loaded = SplitPredictions.load(tmp_path / "p.npz")
    assert loaded.known is not None and (loaded.known == known).all()
    full = SplitPredictions(
        "test", ["a"], probs[:, :1], binary[:, :1], thresholds[:1], np.arange(50), "fraction", 0, 0, 0
    )
    full.save(tmp_path / "full.npz")
    assert "known" not in np.load(tmp_path / "full.npz").files  # fully labelled files as before


def test_split_keeps_known_positives_on_both_sides_and_names_blank_labels() -> None:
    targets = partial_targets(60, 4, seed=7, unknown=0.5)
    train, val, _ = job_split(targets, 0.2, 0)
    positives = np.nan_to_num(targets) > 0.5
    for j in range(4):
        if positives[:, j].sum() >= 2:
            assert positives[train, j].any() and positives[val, j].any()
    assert unannotated_labels(targets, train) == []
    blank = targets.copy()
    blank[train, 2] = np.nan
    assert unannotated_labels(blank, train) == [2]


def flipped_split(n: int = 200, k: int = 5, flips: int = 6, seed: int = 8) -> tuple[np.ndarray, ...]:
    """Out-of-sample probabilities of a good model, labels with `flips` cells flipped, 20% unknown."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < 0.35).astype(np.float64)
    probs = np.clip(np.where(truth > 0, 0.85, 0.1) + rng.normal(0, 0.07, truth.shape), 0.01, 0.99)
    given = truth.copy()
    planted = rng.choice(n, size=flips, replace=False)
    for i in planted:
        j = int(rng.integers(k))
        given[i, j] = 1 - given[i, j]
    hidden = rng.random(truth.shape) < 0.2
    for i in planted:  # a flipped cell stays annotated
        hidden[i] &= given[i] == truth[i]
    given[hidden] = np.nan
    return probs, given, planted


def test_label_issues_rank_planted_flips_first() -> None:
    probs, given, planted = flipped_split()
    issues = rank_label_issues(probs, given, np.full(5, 0.5), list("abcde"), np.arange(len(probs)) + 1000)
    assert len(issues) == len(probs)
    top = {issue.index - 1000 for issue in issues[: len(planted)]}
    assert top == set(planted.tolist())
    first = issues[0]
    assert first.disagreements and all(
        not np.isnan(given[first.index - 1000, "abcde".index(d["label"])]) for d in first.disagreements
    )
    assert [i.score for i in issues] == sorted(i.score for i in issues)
    assert sum(i.flagged for i in issues[: len(planted)]) >= 1
    unknown_row = int(np.flatnonzero(np.isnan(given).any(axis=1))[0])
    entry = next(i for i in issues if i.index == unknown_row + 1000)
    assert entry.unknown and not {d["label"] for d in entry.disagreements} & set(entry.unknown)


def test_training_on_partial_labels_masks_validation(tmp_path: Path, tiny_bert: str) -> None:
    root = write_text_dataset(tmp_path / "data", n=48)
    lines = (root / "samples.jsonl").read_text().splitlines()
    rng = np.random.default_rng(9)
    labels = json.loads((root / "labels.json").read_text())
    rewritten = []
    for line in lines:
        sample = json.loads(line)
        hidden = [name for name in labels if name not in sample["labels"] and rng.random() < 0.3]
        rewritten.append(json.dumps({**sample, "unknown": hidden} if hidden else sample))
    (root / "samples.jsonl").write_text("\n".join(rewritten) + "\n")
    assert np.isnan(load_stored_dataset(root).targets).any()
    config = TrainConfig(
        dataset_dir=root,
        base_model=tiny_bert,
        hyperparameters=Hyperparameters(epochs=2, batch_size=16, learning_rate=2e-3, max_length=16, seed=0),
        device="cpu",
        loss=LossSpec(name="apl"),
    )
    result = train(config)
    assert result.best_metrics is not None and np.isfinite(result.best_metrics.val_loss)
    validation = result.validation
    assert validation is not None and validation.known is not None and not validation.known.all()
    stored = load_stored_dataset(root)
    assert (validation.known == ~np.isnan(stored.targets[validation.indices])).all()
    assert result.evaluation is not None
    support = {e["label"]: e["support"] for e in result.evaluation["per_label"]}
    expected = np.nansum(stored.targets[validation.indices], axis=0)
    assert [support[name] for name in stored.labels] == expected.tolist()


def test_label_issues_judge_each_label_on_its_own_scale() -> None:
    """A label the model scores high everywhere (0.6 where absent, decided at 0.8) must not make
    every sample without it look suspect: judged against its threshold, the planted flips come first."""
    rng = np.random.default_rng(3)
    truth = (rng.random((300, 3)) < 0.4).astype(np.float64)
    probs = np.where(truth > 0, 0.85, 0.10)
    probs[:, 0] = np.where(truth[:, 0] > 0, 0.97, 0.60)
    probs = np.clip(probs + rng.normal(0, 0.03, probs.shape), 0.01, 0.99)
    given = truth.copy()
    planted = rng.choice(np.flatnonzero(truth[:, 0] == 0), size=6, replace=False)
    given[planted, 0] = 1.0  # "a" added where it is absent
    issues = rank_label_issues(probs, given, np.array([0.8, 0.5, 0.5]), list("abc"), np.arange(300))
    assert {issue.index for issue in issues[:6]} == set(planted.tolist())
    assert all(0.0 <= issue.score <= 1.0 for issue in issues)
