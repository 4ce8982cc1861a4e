"""GET /v1/models/{id}/label-issues: the worker's stored ranking, paged, owner-isolated.

The ranking is written by the worker's own code (`worker.label_issues.write_label_issues`) from
out-of-sample probabilities of a synthetic split with planted label flips; the endpoint must
list those samples first, with their texts, given labels and the labels the model disagrees on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from apl.predictions import SplitPredictions
from core.settings import Settings
from tests.api.conftest import assert_problem
from tests.api.serving_support import Trained, register, trained_models
from tests.apl.test_partial_labels import flipped_split
from worker.label_issues import write_label_issues

SQLITE_ONLY = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
LABELS = list("abcde")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    return trained_models(tmp_path_factory.getbasetemp() / "serving-models")


def _store_ranking(
    settings: Settings, model_id: str, tmp_path: Path, *, no_signal: bool = False
) -> np.ndarray:
    """Write a planted-flip ranking for `model_id` the way the worker does; returns the flipped rows.

    `no_signal` replaces the model's scores by random ones: a model that can judge no label."""
    probs, given, planted = flipped_split()
    if no_signal:
        probs = np.random.default_rng(0).random(probs.shape)
    dataset_dir = tmp_path / "dataset"
    dataset_dir.mkdir()
    samples = [{"text": f"sample number {i}", "labels": []} for i in range(len(probs))]
    (dataset_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    known = ~np.isnan(given)
    validation = SplitPredictions(
        split="validation",
        labels=LABELS,
        probs=probs.astype(np.float32),
        targets=(np.nan_to_num(given) > 0.5).astype(np.uint8),
        known=known,
        thresholds=np.full(len(LABELS), 0.5),
        indices=np.arange(len(probs)),
        source="fraction",
        map=0.0,
        micro_f1=0.0,
        macro_f1=0.0,
    )
    path = settings.files.label_issues(model_id)
    assert write_label_issues(path, validation, dataset_dir, model_id=model_id, dataset_id="ds-1")
    return planted


@SQLITE_ONLY
def test_label_issues_list_planted_flips_first_paged_and_owner_isolated(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    bob: dict[str, str],
    trained: dict[str, Trained],
    tmp_path: Path,
) -> None:
    model_id = register(settings, trained["text"], "alice")
    url = f"/v1/models/{model_id}/label-issues"
    assert_problem(client.get(url, headers=alice), 404, "label_issues_unavailable")
    planted = _store_ranking(settings, model_id, tmp_path)

    first = client.get(url, headers=alice, params={"limit": len(planted)})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["split"] == "validation" and body["num_samples"] == 200 and body["dataset_id"] == "ds-1"
    # Every label of this split is well scored: all are judged, none left out, no verdict.
    assert body["judged_labels"] == LABELS and body["excluded_labels"] == [] and body["verdict"] is None
    assert {item["index"] for item in body["items"]} == set(planted.tolist())
    assert [item["rank"] for item in body["items"]] == list(range(1, len(planted) + 1))
    top = body["items"][0]
    assert top["text"] == f"sample number {top['index']}" and top["image"] is None
    assert top["disagreements"] and {d["label"] for d in top["disagreements"]} <= set(LABELS)

    seen = [item["index"] for item in body["items"]]
    cursor = body["next_cursor"]
    while cursor:
        page = client.get(url, headers=alice, params={"limit": 50, "cursor": cursor}).json()
        seen += [item["index"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert sorted(seen) == list(range(200))  # every validation sample once, no repeats

    assert_problem(client.get(url, headers=bob), 404, "not_found")
    assert_problem(client.get(url, headers=alice, params={"cursor": "garbage"}), 400, "invalid_cursor")
    assert client.delete(f"/v1/models/{model_id}", headers=alice).status_code == 204
    assert not settings.files.label_issues(model_id).exists()


@SQLITE_ONLY
def test_a_model_too_weak_to_judge_any_label_says_so_instead_of_ranking(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained], tmp_path: Path
) -> None:
    model_id = register(settings, trained["text"], "alice")
    _store_ranking(settings, model_id, tmp_path, no_signal=True)
    body = client.get(f"/v1/models/{model_id}/label-issues", headers=alice).json()
    assert body["items"] == [] and body["num_samples"] == 0 and body["num_flagged"] == 0
    assert body["judged_labels"] == [] and body["verdict"] and "too weak" in body["verdict"]
    excluded = {entry["label"]: entry for entry in body["excluded_labels"]}
    assert set(excluded) == set(LABELS)
    for entry in excluded.values():
        assert entry["ap"] < entry["bar"] and "below the bar" in entry["reason"]
