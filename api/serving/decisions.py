"""From probabilities to the labels a request gets: its thresholds and the decision rule.

Decisions are made here, not in the model thread, because they depend on the
request (its threshold override, top_k and min_labels) while a batch mixes several
requests. The rule itself is `apl.decisions`, the same one `apl.inference` applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from api.serving.schemas import Prediction
from apl.decisions import decide_batch
from core.errors import AppError


def resolve_thresholds(
    labels: Sequence[str], tuned: Mapping[str, float], override: float | Mapping[str, float] | None
) -> list[float]:
    """The threshold of each label for one request.

    No override: the model's tuned thresholds. A number: that threshold for every
    label. An object: its labels get its values, the others keep their tuned ones;
    naming a label the model does not have is an error (422 `unknown_label`), since it
    is almost always a typo that would otherwise be silently ignored.
    """
    if override is None:
        return [float(tuned[label]) for label in labels]
    if isinstance(override, int | float):
        return [float(override)] * len(labels)
    unknown = [name for name in override if name not in tuned]
    if unknown:
        raise AppError(
            422,
            "unknown_label",
            f"threshold names labels this model does not have: {', '.join(sorted(unknown)[:5])}",
            errors=[{"loc": ["body", "threshold", name], "msg": "unknown label"} for name in sorted(unknown)],
        )
    return [float(override.get(label, tuned[label])) for label in labels]


def decide(
    probabilities: Any,
    labels: Sequence[str],
    thresholds: Sequence[float],
    top_k: int | None,
    min_labels: int = 0,
) -> list[Prediction]:
    """One Prediction per row: every label's score, the labels `apl.decisions` chooses, and
    which of them only `min_labels` brought in."""
    rows: list[list[float]] = probabilities.tolist() if hasattr(probabilities, "tolist") else probabilities
    choices = decide_batch(rows, thresholds, top_k=top_k, min_labels=min_labels)
    return [
        Prediction(
            labels=[labels[j] for j in choice.chosen],
            scores={label: float(score) for label, score in zip(labels, row, strict=True)},
            added_by_min_labels=[labels[j] for j in choice.added],
        )
        for row, choice in zip(rows, choices, strict=True)
    ]
