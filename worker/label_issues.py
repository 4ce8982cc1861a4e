"""Write a succeeded job's suspect-label ranking next to its model (`apl.label_issues`).

Runs in the worker after the artifact is written and before the job reads `succeeded`, on
the final model's validation predictions (the only out-of-sample ones: see
`apl.label_issues`). Each entry carries the sample's text, or its image's path inside the
dataset, so the list stays readable after the dataset is deleted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from apl.atomic import atomic_file
from apl.predictions import SplitPredictions

log = logging.getLogger(__name__)

#: Characters of a sample's text kept in the ranking.
TEXT_CHARS = 500
METHOD = (
    "cleanlab.multilabel_classification: rank.get_label_quality_scores (self_confidence) and "
    "filter.find_label_issues (prune_by_noise_rate) on the validation split's out-of-sample, "
    "calibrated probabilities, each label's shifted in log-odds so that its decision threshold is 0.5; "
    "unknown cells filled with the model's decision; only labels whose validation AP clears "
    "prevalence + 0.75 * (1 - prevalence) with at least 5 known positives (the model can judge them)"
)


def _sample_input(samples: list[dict[str, Any]], index: int) -> dict[str, str | None]:
    sample = samples[index] if 0 <= index < len(samples) else {}
    text = sample.get("text")
    return {
        "text": text[:TEXT_CHARS] if isinstance(text, str) else None,
        "image": sample.get("image") if isinstance(sample.get("image"), str) else None,
    }


def build_document(
    validation: SplitPredictions, dataset_dir: Path, *, model_id: str, dataset_id: str
) -> dict[str, Any]:
    """The stored ranking: every validation sample, most suspect first, with its input."""
    import numpy as np

    from apl.formats import SAMPLES_FILE
    from apl.label_issues import FORMAT_VERSION, TOO_WEAK, judge_labels, rank_label_issues

    targets = validation.targets.astype(np.float64)
    if validation.known is not None:
        targets[~validation.known] = np.nan
    judgements = judge_labels(validation.probs.astype(np.float64), targets, validation.labels)
    issues = rank_label_issues(
        validation.probs,
        targets,
        validation.thresholds,
        validation.labels,
        validation.indices,
        judged=[j.judged for j in judgements],
    )
    with (dataset_dir / SAMPLES_FILE).open(encoding="utf-8") as handle:
        samples = [json.loads(line) for line in handle if line.strip()]
    items = [issue.as_dict() | _sample_input(samples, issue.index) for issue in issues]
    return {
        "version": FORMAT_VERSION,
        "model_id": model_id,
        "dataset_id": dataset_id,
        "split": "validation",
        "num_samples": len(items),
        "num_validation_samples": len(validation.indices),
        "num_flagged": sum(1 for item in items if item["flagged"]),
        "method": METHOD,
        "judged_labels": [j.label for j in judgements if j.judged],
        "excluded_labels": [j.as_dict() for j in judgements if not j.judged],
        "verdict": None if any(j.judged for j in judgements) else TOO_WEAK,
        "items": items,
    }


def write_label_issues(
    path: Path, validation: SplitPredictions, dataset_dir: Path, *, model_id: str, dataset_id: str
) -> bool:
    """Write the ranking atomically; False (logged) when it cannot be made, which never fails the job:
    the model is good whether or not its data's labels could be ranked."""
    try:
        document = build_document(validation, dataset_dir, model_id=model_id, dataset_id=dataset_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.warning("no label-issue ranking for model %s: %s", model_id, exc)
        return False
    return True
