"""A one-vs-rest logistic-regression baseline on a sweep's own test split (torch-free).

A fine-tuned network is only worth its cost if it beats what a linear model gets from
the same data, so the loss-quality report (benchmarks/loss_quality.py) scores this
baseline next to every sweep: TF-IDF word 1-2-grams for text, the raw pixels (RGB,
resized to `PIXEL_SIZE`, scaled to [0, 1]) for images, one logistic regression per
label (scikit-learn). It gets what a sweep child gets and no more: the split comes
from `apl.data.split_test_indices` with the child's fractions and seed, it is fitted
on the training part, its one knob (the inverse regularisation C) is chosen by
validation mAP, and the test split is scored once, with the mAP the service reports
(`apl.metrics.mean_average_precision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from apl.data.split import split_test_indices
from apl.data.stored import StoredDataset
from apl.metrics import mean_average_precision

#: The values of C tried on the validation split (scikit-learn's default is 1.0).
C_GRID = (0.1, 1.0, 10.0)
#: Side of the square the images are resized to before their pixels become features (the demo
#: mosaics hold 16x16 distinct values: 2x2 tiles of 8x8 digits, each pixel scaled up 4x).
PIXEL_SIZE = 16
MAX_ITER = 2000


@dataclass(frozen=True)
class BaselineResult:
    """The baseline's scores on one seed's split, and what it was fitted with."""

    seed: int
    test_map: float
    val_map: float
    c: float
    features: str
    num_train: int
    num_val: int
    num_test: int
    #: The test split's sample indices (ascending), as the sweep's children have it.
    test_indices: tuple[int, ...]


def pixel_features(paths: Sequence[str], size: int = PIXEL_SIZE) -> np.ndarray:
    """Each image as one row of RGB values in [0, 1], resized to size x size."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            rows.append(np.asarray(rgb, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows)


def _features(dataset: StoredDataset, train: np.ndarray) -> tuple[np.ndarray, str]:
    """The feature matrix of every sample; TF-IDF's vocabulary and weights come from `train` only."""
    if dataset.modality == "image":
        return pixel_features(dataset.inputs), f"raw pixels ({PIXEL_SIZE}x{PIXEL_SIZE} RGB)"
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit([dataset.inputs[int(i)] for i in train])
    return vectorizer.transform(dataset.inputs), "TF-IDF word 1-2-grams"


def _fit(features: np.ndarray, targets: np.ndarray, c: float) -> OneVsRestClassifier:
    model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=MAX_ITER))
    return model.fit(features, targets.astype(np.int64))


def _probabilities(model: OneVsRestClassifier, features: np.ndarray, num_labels: int) -> np.ndarray:
    probs = np.asarray(model.predict_proba(features), dtype=np.float64)
    return probs.reshape(len(probs), num_labels)


def logistic_baseline(
    dataset: StoredDataset, *, seed: int, test_fraction: float, val_fraction: float
) -> BaselineResult:
    """Fit and score the baseline on the split a sweep child with this seed and these fractions gets."""
    train, val, test = split_test_indices(dataset.targets, test_fraction, val_fraction, seed)
    features, kind = _features(dataset, train)
    targets = dataset.targets
    tried = []
    for c in C_GRID:
        model = _fit(features[train], targets[train], c)
        score = mean_average_precision(_probabilities(model, features[val], targets.shape[1]), targets[val])
        tried.append((score, -c, model))  # ties go to the stronger regularisation (smaller C)
    val_map, negative_c, model = max(tried, key=lambda entry: (entry[0], entry[1]))
    c = -negative_c
    test_map = mean_average_precision(_probabilities(model, features[test], targets.shape[1]), targets[test])
    return BaselineResult(
        seed=seed,
        test_map=test_map,
        val_map=val_map,
        c=c,
        features=kind,
        num_train=len(train),
        num_val=len(val),
        num_test=len(test),
        test_indices=tuple(int(i) for i in test),
    )
