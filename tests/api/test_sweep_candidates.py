"""A sweep that leaves `candidates` out takes the four presets plus what the dataset's profile calls for.

Long tail -> dbl; unknown cells (or under-tagging suspected) -> hill, splc; the sweep
says why in `candidates_reason`. Explicit candidates are used as given.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from core.settings import Settings
from tests.api.conftest import Uploader
from tests.api.test_jobs import drain_broker
from tests.api.test_sweeps import post_sweep


def _long_tail_with_unknown_cells() -> bytes:
    lines = ["text,labels,unknown"]
    for i in range(60):
        labels = ["common"] * (i < 50) + ["mid"] * (i % 3 == 0) + ["rare"] * (i in (1, 2, 4))
        unknown = "mid" if i % 3 == 1 and i < 20 else ""
        lines.append(f'"row {i} {" ".join(labels)}",{"|".join(labels)},{unknown}')
    return ("\n".join(lines) + "\n").encode()


def test_the_profile_chooses_dbl_hill_and_splc_and_says_why(
    client: TestClient, alice: dict[str, str], upload: Uploader, settings: Settings
) -> None:
    created = upload(alice, _long_tail_with_unknown_cells(), name="long-tail")
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert dataset["label_counts"] == {"common": 50, "mid": 20, "rare": 3}
    profile = client.get(f"/v1/datasets/{dataset['id']}", headers=alice).json()["profile"]
    assert profile["imbalance_ratio"] == round(50 / 3, 4)
    assert profile["unknown_share"] == round(dataset["unknown_cells"] / (60 * 3), 6) > 0
    assert profile["label_cardinality"] == round(dataset["label_cardinality"], 4)

    response = post_sweep(client, alice, dataset["id"], seeds=[0], hyperparameters={"epochs": 1})
    assert response.status_code == 202, response.text
    sweep = response.json()
    names = [c["name"] for c in sweep["spec"]["candidates"]]
    assert names == ["bce", "focal", "asl", "apl", "dbl", "hill", "splc"]
    assert "long tail" in sweep["candidates_reason"] and "unknown" in sweep["candidates_reason"]
    assert len(sweep["job_ids"]) == 7
    again = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()
    assert again["candidates_reason"] == sweep["candidates_reason"]

    given = post_sweep(
        client, alice, dataset["id"], seeds=[0], candidates=[{"name": "bce"}, {"name": "hill"}]
    )
    assert given.status_code == 202, given.text
    assert [c["name"] for c in given.json()["spec"]["candidates"]] == ["bce", "hill"]
    assert given.json()["candidates_reason"] is None
    drain_broker(settings, expect=9)


def test_a_balanced_fully_annotated_dataset_keeps_the_four_presets(
    client: TestClient, alice: dict[str, str], upload: Uploader, settings: Settings
) -> None:
    rows = ["text,labels"] + [f'"row {i}",{"a|b" if i % 2 else "b|c"}' for i in range(40)]
    dataset: dict[str, Any] = upload(alice, ("\n".join(rows) + "\n").encode(), name="even").json()
    first = post_sweep(client, alice, dataset["id"], seeds=[0], idempotency_key="same-sweep")
    assert first.status_code == 202, first.text
    assert [c["name"] for c in first.json()["spec"]["candidates"]] == ["bce", "focal", "asl", "apl"]
    assert first.json()["candidates_reason"].startswith("the four presets")
    replay = post_sweep(client, alice, dataset["id"], seeds=[0], idempotency_key="same-sweep")
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    drain_broker(settings, expect=4)
