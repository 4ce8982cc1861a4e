"""Linear baselines: one-vs-rest logistic regression on fixed features (torch-free).

A fine-tuned network is only worth its cost if it beats what a linear model gets from
the same data, so every job fits these beside its own training (`apl.training.baselines`)
and the loss-quality report (benchmarks/loss_quality.py) scores one next to every sweep.
The features: the frozen base model's embeddings (the linear probe, computed by the
training stack), TF-IDF word 1-2-grams for text, or the raw pixels (RGB, resized to
`PIXEL_SIZE`, scaled to [0, 1]) for images. The fit (`fit_linear`) is one logistic
regression per label (scikit-learn) on the training split, its unknown cells left out,
and the one knob (the inverse regularisation C, shared by the labels) chosen by
validation mAP (`apl.metrics.mean_average_precision`); dense features are standardised
for the fit and the scaling is folded back into the weights, so the result is a plain
linear layer on the original features: `features @ coef.T + intercept` are its logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from apl.data.split import split_test_indices
from apl.data.stored import StoredDataset
from apl.metrics import mean_average_precision

#: The values of C tried on the validation split (scikit-learn's default is 1.0).
C_GRID = (0.1, 1.0, 10.0)
#: Side of the square the images are resized to before their pixels become features (the demo
#: mosaics hold 16x16 distinct values: 2x2 tiles of 8x8 digits, each pixel scaled up 4x).
PIXEL_SIZE = 16
MAX_ITER = 2000
#: The least spread a dense feature is scaled by, as a share of the median feature's spread.
MIN_RELATIVE_SCALE = 0.05
#: A label whose training cells are all one class gets a constant logit, its clipped prior.
_PRIOR_CLIP = 1e-3

Features = Any  # a dense ndarray or a scipy sparse matrix, one row per sample


@dataclass(frozen=True)
class LinearFit:
    """A one-vs-rest logistic regression as a linear layer on the original features."""

    #: (labels, features) weights and (labels,) biases, float64.
    coef: np.ndarray
    intercept: np.ndarray
    c: float
    val_map: float

    def logits(self, features: Features) -> np.ndarray:
        """One logit per sample and label (the decision function of each label's regression)."""
        scores = np.asarray(features @ self.coef.T, dtype=np.float64)
        return np.asarray(scores + self.intercept[None, :])


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


def tfidf_features(texts: Sequence[str], train: np.ndarray) -> Features:
    """TF-IDF word 1-2-grams of every text; the vocabulary and weights come from `train` only."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit([texts[int(i)] for i in train])
    return vectorizer.transform(texts)


def _features(dataset: StoredDataset, train: np.ndarray) -> tuple[Features, str]:
    if dataset.modality == "image":
        return pixel_features(dataset.inputs), f"raw pixels ({PIXEL_SIZE}x{PIXEL_SIZE} RGB)"
    return tfidf_features(dataset.inputs, train), "TF-IDF word 1-2-grams"


def _standardise(features: Features) -> tuple[Features, np.ndarray, np.ndarray]:
    """Dense features centred and scaled on the training rows (sparse ones kept as they are)."""
    if sparse.issparse(features):
        width = features.shape[1]
        return features, np.zeros(width), np.ones(width)
    dense = np.asarray(features, dtype=np.float64)
    mean, scale = dense.mean(axis=0), dense.std(axis=0)
    varying = scale[scale > 1e-12]
    # A feature that barely varies on the training rows would get a weight of 1/its spread once
    # the scaling is folded in; flooring the spread keeps such weights bounded when the features
    # shift a little (a fine-tuned backbone starting from this regression as its head).
    floor = MIN_RELATIVE_SCALE * float(np.median(varying)) if varying.size else 1.0
    scale = np.where(scale > 1e-12, np.maximum(scale, floor), 1.0)
    return (dense - mean) / scale, mean, scale


def _fit_label(model: LogisticRegression, x: Features, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """One label's weights and bias; a label of one class on its known rows gets its prior."""
    if y.min() == y.max():
        prior = float(np.clip(y.mean(), _PRIOR_CLIP, 1 - _PRIOR_CLIP))
        return np.zeros(x.shape[1]), float(np.log(prior / (1 - prior)))
    model.set_params(C=c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


def _fit_all(
    x: Features, targets: np.ndarray, c: float, models: list[LogisticRegression]
) -> tuple[np.ndarray, np.ndarray]:
    coef, intercept = np.zeros((targets.shape[1], x.shape[1])), np.zeros(targets.shape[1])
    for j in range(targets.shape[1]):
        known = ~np.isnan(targets[:, j])
        coef[j], intercept[j] = _fit_label(models[j], x[known], targets[known, j] > 0.5, c)
    return coef, intercept


def fit_linear(
    train_x: Features,
    train_y: np.ndarray,
    val_x: Features,
    val_y: np.ndarray,
    c_grid: Sequence[float] = C_GRID,
) -> LinearFit:
    """The per-label logistic regressions with the C of the best validation mAP (ties: smaller C).

    Targets may hold NaN (unknown cells): each label is fitted on its known training rows
    and scored on its known validation rows. The C values are tried from the smallest up,
    each fit starting from the last one's weights (warm start), which is what makes a
    grid cheap.
    """
    train_y = np.asarray(train_y, dtype=np.float64)
    x, mean, scale = _standardise(train_x)
    models = [LogisticRegression(max_iter=MAX_ITER, warm_start=True) for _ in range(train_y.shape[1])]
    best: LinearFit | None = None
    for c in sorted(c_grid):
        coef, intercept = _fit_all(x, train_y, c, models)
        folded = LinearFit(coef / scale, intercept - (coef / scale) @ mean, c, 0.0)
        score = mean_average_precision(_sigmoid(folded.logits(val_x)), val_y)
        if best is None or score > best.val_map:
            best = LinearFit(folded.coef, folded.intercept, c, score)
    assert best is not None, "the C grid is empty"
    return best


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * logits)))


def probabilities(fit: LinearFit, features: Features) -> np.ndarray:
    """The fitted regressions' probabilities (sigmoid of `LinearFit.logits`)."""
    return _sigmoid(fit.logits(features))


def logistic_baseline(
    dataset: StoredDataset, *, seed: int, test_fraction: float, val_fraction: float
) -> BaselineResult:
    """Fit and score the baseline on the split a sweep child with this seed and these fractions gets."""
    train, val, test = split_test_indices(dataset.targets, test_fraction, val_fraction, seed)
    features, kind = _features(dataset, train)
    targets = dataset.targets
    fit = fit_linear(features[train], targets[train], features[val], targets[val])
    test_map = mean_average_precision(probabilities(fit, features[test]), targets[test])
    return BaselineResult(
        seed=seed,
        test_map=test_map,
        val_map=fit.val_map,
        c=fit.c,
        features=kind,
        num_train=len(train),
        num_val=len(val),
        num_test=len(test),
        test_indices=tuple(int(i) for i in test),
    )


#: The baselines a job fits, by key: the frozen base model's embeddings, and TF-IDF (text only).
LINEAR_PROBE = "linear_probe"
TFIDF = "tfidf"
FINE_TUNED = "fine_tuned"
#: How the comparison and the warnings name them.
DISPLAY_NAMES = {FINE_TUNED: "fine-tuned", LINEAR_PROBE: "linear probe", TFIDF: "TF-IDF"}


@dataclass(frozen=True)
class BaselineScore:
    """One baseline of a job: validation scores (thresholds tuned there), the test split's if any."""

    features: str
    c: float
    map: float
    micro_f1: float
    macro_f1: float
    #: Seconds to compute its features and fit it (embedding forward passes included).
    time_s: float
    test: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobBaselines:
    """The baselines of one job next to its fine-tuned model, and which model the job publishes.

    `selected` is FINE_TUNED or LINEAR_PROBE: the better of the two on validation mAP (a tie
    keeps the fine-tuned model). TF-IDF cannot be published as an artifact of the base model,
    so when it wins the job only says so.
    """

    fine_tuned_map: float
    scores: dict[str, BaselineScore]
    selected: str
    time_s: float

    @property
    def comparison(self) -> str:
        """E.g. "fine-tuned 0.710 vs linear probe 0.640 vs TF-IDF 0.630 (validation mAP)"."""
        parts = [f"{DISPLAY_NAMES[FINE_TUNED]} {self.fine_tuned_map:.3f}"]
        parts += [f"{DISPLAY_NAMES[key]} {score.map:.3f}" for key, score in self.scores.items()]
        return " vs ".join(parts) + " (validation mAP)"

    @property
    def warnings(self) -> list[str]:
        """One sentence per baseline that beats the fine-tuned model on validation, with both numbers."""
        out = []
        for key, score in self.scores.items():
            if score.map <= self.fine_tuned_map:
                continue
            what = (
                "the linear probe is published as this job's model (model_id)"
                if key == LINEAR_PROBE and self.selected == LINEAR_PROBE
                else "try more training steps, another learning rate or another loss"
            )
            out.append(
                f"the {DISPLAY_NAMES[key]} baseline (validation mAP {score.map:.3f}) beats the fine-tuned "
                f"model ({self.fine_tuned_map:.3f}); {what}"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        """What the job's best_metrics and the models' metrics keep under `baselines`."""
        return {
            FINE_TUNED: {"map": self.fine_tuned_map},
            **{key: score.as_dict() for key, score in self.scores.items()},
            "selected": self.selected,
            "comparison": self.comparison,
            "time_s": self.time_s,
        }
