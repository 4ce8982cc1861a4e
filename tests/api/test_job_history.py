"""Jobs' name and metadata, the stored history (JSON pages and the SSE replay), checkpoints and
id prefixes, through the HTTP API on SQLite and PostgreSQL. The worker's side is driven through
core.jobs.lifecycle, the functions the real worker calls."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.jobs import lifecycle
from core.jobs.status import JobStatus
from core.settings import Settings
from tests.api.conftest import JobPoster, Uploader, assert_problem
from tests.api.test_jobs import _parse_sse


def run_two_epochs(settings: Settings, job_id: str, *, checkpoint_file: bool = False) -> int:
    """Claim the job and evaluate + checkpoint two epochs as the worker does; returns the attempt."""
    claimed = lifecycle.claim(job_id, settings)
    assert claimed is not None
    for epoch, map_ in ((1, 0.61), (2, 0.72)):
        point = {"epoch": epoch, "step": 5 * epoch, "map": map_, "val_loss": 0.3 / epoch}
        assert lifecycle.add_metric_point(job_id, claimed.attempt, _point(epoch, map_), settings, epochs=2)
        assert lifecycle.record_checkpoint(job_id, claimed.attempt, point, settings)
    if checkpoint_file:
        path = settings.files.checkpoint(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"checkpoint")
    return claimed.attempt


def _point(epoch: int, map_: float) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "step": 5 * epoch,
        "train_loss": 0.4 / epoch,
        "val_loss": 0.3 / epoch,
        "map": map_,
        "micro_f1": 0.5,
        "macro_f1": 0.4,
        "per_class_ap": {"summer": map_},
        "time_s": 2.0 * epoch,
    }


def test_name_and_metadata_are_kept_shown_and_bounded(
    client: TestClient, alice: dict[str, str], text_dataset: dict[str, Any], post_job: JobPoster
) -> None:
    created = post_job(alice, text_dataset["id"], name=" baseline ", metadata={"experiment": "apl-vs-bce"})
    assert created.status_code == 202, created.text
    job = created.json()
    assert (job["name"], job["metadata"]) == ("baseline", {"experiment": "apl-vs-bce"})
    assert "name" not in job["spec"] and "metadata" not in job["spec"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["metadata"] == {
        "experiment": "apl-vs-bce"
    }
    listed = client.get("/v1/jobs", headers=alice).json()["items"]
    assert [(item["name"], item["metadata"]) for item in listed] == [
        ("baseline", {"experiment": "apl-vs-bce"})
    ]
    plain = post_job(alice, text_dataset["id"]).json()
    assert (plain["name"], plain["metadata"]) == (None, {})

    too_many = {f"k{i}": "v" for i in range(17)}
    for bad, loc in [
        ({"metadata": too_many}, ["body", "metadata"]),
        ({"metadata": {"k": "v" * 513}}, ["body", "metadata"]),
        ({"metadata": {"k": 1}}, ["body", "metadata", "k"]),
        ({"name": "x" * 129}, ["body", "name"]),
        ({"name": "   "}, ["body", "name"]),
    ]:
        body = assert_problem(post_job(alice, text_dataset["id"], **bad), 422, "validation_error")
        assert loc in [error["loc"] for error in body["errors"]], body


def test_an_idempotent_retry_must_repeat_name_and_metadata(
    alice: dict[str, str], text_dataset: dict[str, Any], post_job: JobPoster
) -> None:
    first = post_job(alice, text_dataset["id"], idempotency_key="k", name="a").json()
    again = post_job(alice, text_dataset["id"], idempotency_key="k", name="a")
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert_problem(
        post_job(alice, text_dataset["id"], idempotency_key="k", name="b"), 409, "idempotency_key_reused"
    )


def test_history_pages_in_json_and_a_plain_request_still_streams(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    text_dataset: dict[str, Any],
    post_job: JobPoster,
) -> None:
    job_id = post_job(alice, text_dataset["id"], hyperparameters={"epochs": 2}).json()["id"]
    attempt = run_two_epochs(settings, job_id)
    assert lifecycle.finish(
        job_id, attempt, JobStatus.FAILED, settings, "out_of_memory", "the batch did not fit"
    )

    json_headers = alice | {"Accept": "application/json"}
    page = client.get(f"/v1/jobs/{job_id}/events", headers=json_headers)
    assert page.status_code == 200 and page.headers["content-type"] == "application/json"
    items = page.json()["items"]
    assert [(e["type"], e["level"]) for e in items] == [
        ("status", "info"),  # queued
        ("status", "info"),  # running
        ("epoch", "info"),
        ("checkpoint", "info"),
        ("epoch", "info"),
        ("checkpoint", "info"),
        ("status", "error"),  # failed
    ]
    assert items[0]["message"] == "queued: the job was accepted and waits for a worker"
    assert items[2]["data"]["map"] == 0.61 and items[2]["message"].startswith("epoch 1/2: train loss 0.4000")
    assert items[3]["message"] == "checkpoint saved after epoch 1"
    assert items[-1]["data"] == {
        "status": "failed",
        "code": "out_of_memory",
        "error": "the batch did not fit",
    }
    assert page.json()["next_after"] is None

    first = client.get(f"/v1/jobs/{job_id}/events?limit=3", headers=alice).json()  # limit alone means JSON
    assert [e["id"] for e in first["items"]] == [e["id"] for e in items[:3]]
    assert first["next_after"] == items[2]["id"]
    rest = client.get(f"/v1/jobs/{job_id}/events?after={first['next_after']}", headers=alice).json()
    assert [e["id"] for e in rest["items"]] == [e["id"] for e in items[3:]] and rest["next_after"] is None

    streamed = client.get(f"/v1/jobs/{job_id}/events", headers=alice)  # no Accept: the contract's SSE
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(streamed.text)
    assert [data["id"] for kind, data in events if kind == "history"] == [e["id"] for e in items]
    assert [data["map"] for kind, data in events if kind == "metric"] == [0.61, 0.72]
    assert events[-1][0] == "status" and events[-1][1]["status"] == "failed"
    sse = client.get(f"/v1/jobs/{job_id}/events", headers=alice | {"Accept": "text/event-stream"})
    assert sse.headers["content-type"].startswith("text/event-stream")
    # Replaying after the first epoch's event sends what came after it, the second epoch's point included.
    replay = client.get(f"/v1/jobs/{job_id}/events", headers=alice | {"Last-Event-ID": str(items[2]["id"])})
    replayed = _parse_sse(replay.text)
    assert [data["id"] for kind, data in replayed if kind == "history"] == [e["id"] for e in items[3:]]
    assert [data["map"] for kind, data in replayed if kind == "metric"] == [0.72]


def test_history_bounds_and_owner(
    client: TestClient,
    alice: dict[str, str],
    bob: dict[str, str],
    text_dataset: dict[str, Any],
    post_job: JobPoster,
) -> None:
    job_id = post_job(alice, text_dataset["id"]).json()["id"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/events?limit=0", headers=alice), 422, "validation_error")
    assert_problem(client.get(f"/v1/jobs/{job_id}/events?after=-1", headers=alice), 422, "validation_error")
    assert_problem(client.get(f"/v1/jobs/{job_id}/events?limit=5", headers=bob), 404, "not_found")
    assert_problem(client.get(f"/v1/jobs/{job_id}/checkpoints", headers=bob), 404, "not_found")


def test_cancel_is_recorded(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    text_dataset: dict[str, Any],
    post_job: JobPoster,
) -> None:
    queued = post_job(alice, text_dataset["id"]).json()["id"]
    client.post(f"/v1/jobs/{queued}/cancel", headers=alice)
    running = post_job(alice, text_dataset["id"]).json()["id"]
    assert lifecycle.claim(running, settings) is not None
    client.post(f"/v1/jobs/{running}/cancel", headers=alice)
    client.post(f"/v1/jobs/{running}/cancel", headers=alice)  # asking again records nothing new

    def messages(job_id: str) -> list[str]:
        return [
            e["message"]
            for e in client.get(f"/v1/jobs/{job_id}/events?limit=50", headers=alice).json()["items"]
        ]

    assert messages(queued)[-1] == "cancelled: cancelled while queued"
    assert messages(running)[1:] == [
        "running: attempt 1 started",
        "cancel requested; the job stops within one training step",
    ]


@pytest.mark.parametrize("on_disk", [True, False])
def test_checkpoints_list_each_epoch_with_its_metrics(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    text_dataset: dict[str, Any],
    post_job: JobPoster,
    on_disk: bool,
) -> None:
    job_id = post_job(alice, text_dataset["id"], hyperparameters={"epochs": 2}).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/checkpoints", headers=alice).json() == {
        "job_id": job_id,
        "items": [],
    }
    attempt = run_two_epochs(settings, job_id, checkpoint_file=on_disk)
    # A resumed run saves epoch 2 again: it is listed once, with the newer save.
    assert lifecycle.record_checkpoint(job_id, attempt, {"epoch": 2, "step": 10, "map": 0.73}, settings)
    body = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=alice).json()
    items = body["items"]
    assert [(c["epoch"], c["step"], c["metrics"]["map"]) for c in items] == [(1, 5, 0.61), (2, 10, 0.73)]
    assert [c["on_disk"] for c in items] == [False, on_disk]
    assert [c["best"] for c in items] == [False, False]  # no best epoch before the job succeeds
    assert items[0]["metrics"] == {"map": 0.61, "val_loss": 0.3} and items[0]["attempt"] == attempt


def test_id_prefixes_find_datasets_jobs_and_models(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], upload: Uploader, post_job: JobPoster
) -> None:
    dataset = upload(alice, name="seasons").json()
    job = post_job(alice, dataset["id"]).json()
    for path, item in (("/v1/datasets", dataset), ("/v1/jobs", job)):
        found = client.get(f"{path}?id_prefix={item['id'][:8]}", headers=alice).json()["items"]
        assert [row["id"] for row in found] == [item["id"]]
        assert client.get(f"{path}?id_prefix={item['id'][:8]}", headers=bob).json()["items"] == []
        assert_problem(client.get(f"{path}?id_prefix=ZZ%25", headers=alice), 422, "validation_error")
    assert client.get("/v1/models?id_prefix=0", headers=alice).json()["items"] == []
