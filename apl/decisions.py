"""The decision rule: from one sample's label scores to the labels it is given.

One rule for every place that turns scores into labels (the API's predict, the
`apl.inference` predictor, and the ONNX metadata that documents it), so a model
answers the same wherever it runs:

1. a label is chosen when its score reaches its threshold (`score >= threshold`);
2. then `top_k` keeps the k highest-scoring of the chosen labels;
3. then `min_labels` adds the highest-scoring others until that many are chosen,
   so with `min_labels=1` a prediction is never empty.

Chosen labels come highest score first; equal scores keep label order. Plain Python
(no torch, no NumPy) so that the API process applies it without heavy imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The threshold of a label that could not be tuned (too few validation positives),
#: and of every label before a model has been evaluated.
FALLBACK_THRESHOLD = 0.5

#: The rule in words, as stored in an exported model's metadata.
DECISION_RULE = (
    "a label is returned when its score reaches its threshold; then top_k keeps the k highest of "
    "those; then min_labels adds the highest-scoring others until that many are returned"
)


@dataclass(frozen=True)
class Choice:
    """The labels one sample is given (indices, highest score first) and which of them
    `min_labels` added because they did not pass (or were cut by `top_k`)."""

    chosen: list[int]
    added: list[int]


def decide_labels(
    scores: Sequence[float],
    thresholds: Sequence[float],
    *,
    top_k: int | None = None,
    min_labels: int = 0,
) -> Choice:
    """The rule of the module docstring for one sample, saying which labels `min_labels` added."""
    if len(scores) != len(thresholds):
        raise ValueError(f"{len(scores)} scores but {len(thresholds)} thresholds")
    order = sorted(range(len(scores)), key=lambda j: -scores[j])  # stable: ties keep label order
    passing = [j for j in order if scores[j] >= thresholds[j]]
    if top_k is not None:
        passing = passing[: max(0, top_k)]
    wanted = min(max(0, min_labels), len(order))
    if len(passing) >= wanted:
        return Choice(chosen=passing, added=[])
    kept = set(passing)
    added = [j for j in order if j not in kept][: wanted - len(passing)]
    kept.update(added)
    return Choice(chosen=[j for j in order if j in kept], added=added)


def choose_labels(
    scores: Sequence[float],
    thresholds: Sequence[float],
    *,
    top_k: int | None = None,
    min_labels: int = 0,
) -> list[int]:
    """Indices of the labels one sample is given, highest score first (see the module docstring)."""
    return decide_labels(scores, thresholds, top_k=top_k, min_labels=min_labels).chosen


def decide_batch(
    scores: Any,
    thresholds: Sequence[float] | Any,
    *,
    top_k: int | None = None,
    min_labels: int = 0,
) -> list[Choice]:
    """`decide_labels` for each row of a (samples, labels) matrix: nested lists or a NumPy array."""
    rows = _as_lists(scores)
    cut = [float(value) for value in _as_lists(thresholds)]
    return [decide_labels(row, cut, top_k=top_k, min_labels=min_labels) for row in rows]


def choose_batch(
    scores: Any,
    thresholds: Sequence[float] | Any,
    *,
    top_k: int | None = None,
    min_labels: int = 0,
) -> list[list[int]]:
    """`choose_labels` for each row of a (samples, labels) matrix: nested lists or a NumPy array."""
    return [c.chosen for c in decide_batch(scores, thresholds, top_k=top_k, min_labels=min_labels)]


def _as_lists(values: Any) -> Any:
    return values.tolist() if hasattr(values, "tolist") else values
