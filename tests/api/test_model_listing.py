"""Models you can tell apart (issue 28): every Model says its name, dataset, loss, sweep, role and
kind; the model and job lists filter by dataset and sweep; a model can be renamed.

The jobs and the sweep are real (queued through the API); what the worker does when one
succeeds (its Model rows, and the linear probe it may publish beside them) is written
here the way core.registry writes it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.api.conftest import TEXT_ROWS, JobPoster, Uploader, assert_problem, csv_bytes
from tests.api.test_sweeps import post_sweep
from tests.published_models import ModelRegistry as Registry
from tests.published_models import publish_model

LABELS = ["summer", "winter"]


def publish(settings: Settings, job_id: str, kind: str = "fine_tuned", *, point_job: bool = True) -> str:
    return publish_model(settings, job_id, LABELS, kind, point_job=point_job)


@pytest.fixture
def registry(
    client: TestClient, settings: Settings, alice: dict[str, str], upload: Uploader, post_job: JobPoster
) -> Registry:
    seasons = upload(alice, name="seasons").json()
    other = upload(alice, csv_bytes(TEXT_ROWS[::-1]), name="other").json()

    def queued(dataset: dict[str, Any], **spec: Any) -> str:
        response = post_job(alice, dataset["id"], **spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    focal_job = queued(seasons, loss={"name": "focal"}, name="genres focal")
    apl_job = queued(other, loss={"name": "apl"})
    response = post_sweep(
        client, alice, seasons["id"], candidates=[{"name": "bce"}, {"name": "apl"}], seeds=[0]
    )
    assert response.status_code == 202, response.text
    sweep = response.json()
    focal, probe = publish(settings, focal_job), publish(settings, focal_job, "linear_probe", point_job=False)
    apl = publish(settings, apl_job)
    children = {}
    for job_id in sweep["job_ids"]:
        loss = client.get(f"/v1/jobs/{job_id}", headers=alice).json()["spec"]["loss"]["name"]
        children[publish(settings, job_id)] = loss
    return Registry(seasons, other, sweep, focal_job, apl_job, focal, probe, apl, children)


def walk(client: TestClient, headers: dict[str, str], path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item a list returns for `params`, walked one page at a time (newest first)."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        page = client.get(
            path, headers=headers, params=params | {"limit": 1} | ({"cursor": cursor} if cursor else {})
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError(f"paging did not end: {[item['id'] for item in items]}")


def listed(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    return walk(client, headers, "/v1/models", **params)


def test_every_model_says_its_name_dataset_loss_sweep_role_and_kind(
    client: TestClient, alice: dict[str, str], registry: Registry
) -> None:
    models = {item["id"]: item for item in listed(client, alice)}
    assert set(models) == {registry.focal, registry.probe, registry.apl, *registry.children}
    fields = ("name", "dataset_id", "dataset_name", "loss", "sweep_id", "role", "kind", "job_id")

    def shown(model_id: str) -> tuple[Any, ...]:
        return tuple(models[model_id][field] for field in fields)

    seasons, other, sweep_id = registry.first["id"], registry.second["id"], registry.sweep["id"]
    job = registry.focal_job
    assert shown(registry.focal) == (
        "genres focal",
        seasons,
        "seasons",
        "focal",
        None,
        None,
        "fine_tuned",
        job,
    )
    assert shown(registry.probe) == (
        "genres focal",
        seasons,
        "seasons",
        "focal",
        None,
        None,
        "linear_probe",
        job,
    )
    assert shown(registry.apl)[:6] == (None, other, "other", "apl", None, None)
    for model_id, loss in registry.children.items():
        assert shown(model_id)[:7] == (None, seasons, "seasons", loss, sweep_id, "replicate", "fine_tuned")
    assert sorted(registry.children.values()) == ["apl", "bce"]
    # The one model reads as it lists.
    assert client.get(f"/v1/models/{registry.probe}", headers=alice).json() == models[registry.probe]


def test_the_model_list_filters_by_dataset_and_sweep_and_still_pages(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], registry: Registry
) -> None:
    seasons, sweep_id = registry.first["id"], registry.sweep["id"]
    everything = [item["id"] for item in listed(client, alice)]

    def ids(**params: Any) -> list[str]:
        return [item["id"] for item in listed(client, alice, **params)]

    on_seasons = ids(dataset_id=seasons)
    assert set(on_seasons) == {registry.focal, registry.probe, *registry.children}
    assert on_seasons == [model_id for model_id in everything if model_id in on_seasons]  # newest first
    assert ids(dataset_id=registry.second["id"]) == [registry.apl]
    assert set(ids(sweep_id=sweep_id)) == set(registry.children)
    assert set(ids(dataset_id=seasons, sweep_id=sweep_id)) == set(registry.children)
    assert ids(dataset_id=registry.second["id"], sweep_id=sweep_id) == []
    assert ids(dataset_id="no-such-dataset") == [] and ids(sweep_id="no-such-sweep") == []
    assert listed(client, bob, dataset_id=seasons) == [] and listed(client, bob, sweep_id=sweep_id) == []
    # A short id still resolves inside a filter.
    assert ids(sweep_id=sweep_id, id_prefix=next(iter(registry.children))[:8]) == [
        next(iter(registry.children))
    ]


def test_the_job_list_filters_by_dataset_and_sweep_and_marks_sweep_children(
    client: TestClient, alice: dict[str, str], registry: Registry
) -> None:
    def jobs(**params: Any) -> list[dict[str, Any]]:
        return walk(client, alice, "/v1/jobs", **params)

    children = set(registry.sweep["job_ids"])
    on_seasons = jobs(dataset_id=registry.first["id"])
    assert {job["id"] for job in on_seasons} == {registry.focal_job, *children}
    assert [job["id"] for job in jobs(dataset_id=registry.second["id"])] == [registry.apl_job]
    in_sweep = jobs(sweep_id=registry.sweep["id"], dataset_id=registry.first["id"])
    assert {job["id"] for job in in_sweep} == children
    for job in on_seasons:
        marked = (job["sweep_id"], job["role"]) == (registry.sweep["id"], "replicate")
        assert marked == (job["id"] in children), job
    assert jobs(dataset_id="no-such-dataset") == []


def test_a_model_can_be_renamed_and_given_back_its_jobs_name(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], registry: Registry
) -> None:
    url = f"/v1/models/{registry.focal}"
    renamed = client.patch(url, headers=alice, json={"name": "  seasons v2 (focal)  "})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "seasons v2 (focal)"  # outer spaces dropped
    assert client.get(url, headers=alice).json()["name"] == "seasons v2 (focal)"
    names = {item["id"]: item["name"] for item in listed(client, alice)}
    # Only that model: its job's linear probe keeps the job's name.
    assert names[registry.focal] == "seasons v2 (focal)" and names[registry.probe] == "genres focal"
    child = next(iter(registry.children))
    assert client.patch(f"/v1/models/{child}", headers=alice, json={"name": "bce seed 0"}).json()["name"] == (
        "bce seed 0"
    )
    assert client.get(f"/v1/jobs/{registry.focal_job}", headers=alice).json()["name"] == "genres focal"

    cleared = client.patch(url, headers=alice, json={"name": None})
    assert cleared.status_code == 200 and cleared.json()["name"] == "genres focal"
    assert client.patch(f"/v1/models/{child}", headers=alice, json={"name": None}).json()["name"] is None

    assert_problem(client.patch(url, headers=bob, json={"name": "mine"}), 404, "not_found")
    assert_problem(client.patch("/v1/models/nope", headers=alice, json={"name": "x"}), 404, "not_found")
    assert client.get(url, headers=alice).json()["name"] == "genres focal"


@pytest.mark.parametrize(
    "body",
    [{"name": ""}, {"name": "   "}, {"name": "x" * 129}, {"name": "two\nlines"}, {"name": 5}, {}],
    ids=["empty", "spaces", "too-long", "control-character", "not-text", "missing"],
)
def test_a_bad_name_is_422_naming_the_field(
    client: TestClient, alice: dict[str, str], registry: Registry, body: dict[str, Any]
) -> None:
    problem = assert_problem(
        client.patch(f"/v1/models/{registry.apl}", headers=alice, json=body), 422, "validation_error"
    )
    assert problem["errors"][0]["loc"] == ["body", "name"], problem
    assert "name" in problem["detail"]
    assert client.get(f"/v1/models/{registry.apl}", headers=alice).json()["name"] is None


def test_an_unknown_field_is_422_and_a_name_at_the_limit_is_kept(
    client: TestClient, alice: dict[str, str], registry: Registry
) -> None:
    url = f"/v1/models/{registry.apl}"
    problem = assert_problem(
        client.patch(url, headers=alice, json={"name": "a", "labels": []}), 422, "validation_error"
    )
    assert problem["errors"][0]["loc"] == ["body", "labels"], problem
    longest = "é" * 128
    assert client.patch(url, headers=alice, json={"name": longest}).json()["name"] == longest
