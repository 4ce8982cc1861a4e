"""The Python client against a live embedded server (`aplserve serve` subprocess):
upload, train, follow, predict, download, cancel, webhooks, and one error type."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from aplserve.client import APIError, Client, Dataset, Job, MetricPoint, verify_webhook
from tests.client.conftest import LiveServer
from tests.client.data import tiny_text_job
from tests.client.processes import free_port
from tests.client.receiver import running_receiver


@pytest.fixture
def client(embedded: LiveServer) -> Client:
    return Client(embedded.url, embedded.key, timeout=30)


@pytest.fixture(scope="module")
def dataset(embedded: LiveServer, text_csv: Path) -> Dataset:
    with Client(embedded.url, embedded.key) as client:
        return client.datasets.upload(text_csv, name="keywords")


def _wait_status(client: Client, job_id: str, status: str, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.jobs.get(job_id)
        if job.status == status:
            return job
        assert not job.finished, f"job ended {job.status} while waiting for {status}: {job.error}"
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {status} in {timeout} s")


def test_upload_streams_the_file_with_progress(client: Client, text_csv: Path, embedded: LiveServer) -> None:
    reports: list[tuple[int, int]] = []
    dataset = client.datasets.upload(
        text_csv, name="progress", progress=lambda done, total: reports.append((done, total))
    )
    size = text_csv.stat().st_size
    assert reports[0] == (0, size) and reports[-1] == (size, size)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert dataset.name == "progress" and dataset.modality == "text" and dataset.format == "csv"
    assert dataset.num_samples == 48 and dataset.labels == ["animal", "color", "food"]
    assert dataset.size_bytes == size and dataset.sha256 == hashlib.sha256(text_csv.read_bytes()).hexdigest()
    assert client.datasets.get(dataset.id) == dataset
    assert dataset.id in {d.id for d in client.datasets.iterate()}
    with Client(embedded.url, embedded.other_key) as bob, pytest.raises(APIError) as caught:
        bob.datasets.get(dataset.id)  # another owner's dataset does not exist for bob
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_train_follow_predict_download_and_the_signed_webhook(
    client: Client, dataset: Dataset, tiny_bert: Path, tmp_path: Path
) -> None:
    secret = client.webhooks.secret().secret
    updates: list[tuple[str, int, MetricPoint | None]] = []
    with running_receiver([500]) as receiver:  # the first call fails: the retry must arrive
        job = client.jobs.create(
            dataset.id, webhook_url=receiver.url, decision={"min_labels": 1}, **tiny_text_job(tiny_bert)
        )
        assert job.status == "queued" and job.spec.webhook_url == receiver.url
        assert job.spec.decision == {"policy": "max_f1", "target": None, "min_labels": 1}
        assert job.spec.calibration == "auto"  # chosen per label on held-out folds (issue 25)
        assert job.spec.loss["gamma_neg"] == 4.0  # the apl preset, filled in by the server
        final = client.jobs.wait(
            job.id, timeout=180, on_update=lambda j, p: updates.append((j.status, j.progress.epoch, p))
        )
        calls = receiver.wait_for(2, timeout=30)

    assert final.status == "succeeded", final.error
    assert final.model_id and final.attempts == 1 and final.finished_at is not None
    statuses = [status for status, _, _ in updates]
    assert statuses[-1] == "succeeded"  # "queued" and "running" may each pass between two polls
    assert set(statuses) <= {"queued", "running", "succeeded"} and final.started_at is not None
    seen_points = [p for _, _, p in updates if p is not None]
    assert [p.epoch for p in seen_points] == [1, 2]  # live metric events, in order
    series = client.jobs.metrics(job.id)
    assert series == seen_points and all(0.0 <= (p.map or 0) <= 1.0 for p in series)
    events = list(client.jobs.events(job.id))  # a finished job: its history, then the stream ends
    assert [e.kind for e in events if e.kind != "history"] == ["metric", "metric", "status"]
    assert events[-1].job == final
    stored = [e.history for e in events if e.history is not None]
    assert [e.type for e in stored if e.type != "message"] == [
        "status",
        "status",
        "epoch",
        "checkpoint",
        "epoch",
        "checkpoint",
        "status",
    ]
    # (messages are what the job has to say besides, e.g. that a linear baseline beat it: issue 23)
    assert stored == list(client.jobs.history(job.id))  # the stream replays the stored history
    assert list(client.jobs.history(job.id, after=stored[3].id, page_size=2)) == stored[4:]  # paged
    assert [(c.epoch, c.on_disk) for c in client.jobs.checkpoints(job.id)] == [(1, False), (2, False)]
    resumed = list(client.jobs.events(job.id, last_event_id=str(stored[2].id)))  # after epoch 1's event
    assert [p.metric.epoch for p in resumed if p.metric is not None] == [2]

    model = client.models.get(final.model_id)
    assert model.job_id == job.id and model.labels == dataset.labels and model.modality == "text"
    assert model.id in {m.id for m in client.models.iterate()}
    predictions = client.models.predict(model.id, ["a cat and a dog", "red bread with cheese"])
    assert len(predictions) == 2
    for prediction in predictions:
        assert set(prediction.scores) == set(model.labels)
        assert set(prediction.labels) <= set(model.labels)
    everything = client.models.predict(model.id, ["the cat"], threshold=0.0)
    assert set(everything[0].labels) == set(model.labels)
    (forced,) = client.models.predict(model.id, ["the cat"], threshold=1.0)  # the job's min_labels=1
    # Threshold 1 passes only a calibrated score of exactly 1 (an isotonic map can reach it);
    # otherwise min_labels adds the top label.
    certain = [label for label, score in forced.scores.items() if score >= 1.0]
    assert len(forced.labels) == 1 and forced.added_by_min_labels == ([] if certain else forced.labels)
    unforced = client.models.predict(model.id, ["the cat"], threshold=1.0, min_labels=0)[0]
    assert unforced.labels == certain and unforced.added_by_min_labels == []
    assert model.decision is not None and model.decision["min_labels"] == 1
    evaluation = client.models.evaluation(model.id)
    assert evaluation["model_id"] == model.id and evaluation["decision"]["min_labels"] == 1
    assert [entry["label"] for entry in evaluation["per_label"]] == model.labels

    path = client.models.download(model.id, tmp_path)
    assert path.parent == tmp_path and path.stat().st_size == model.artifact.size_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.artifact.sha256

    assert [call.answered for call in calls] == [500, 200]
    for call in calls:
        assert verify_webhook(
            secret, call.body, call.headers["X-Aplserve-Timestamp"], call.headers["X-Aplserve-Signature"]
        )
    payload = json.loads(calls[1].body)
    assert payload["event"] == "job.succeeded" and calls[1].headers["X-Aplserve-Event"] == "job.succeeded"
    assert payload["job"] == client.get_json(f"/v1/jobs/{job.id}")


def test_cancel_a_queued_and_a_running_job(client: Client, dataset: Dataset, tiny_bert: Path) -> None:
    with running_receiver() as receiver:
        long = client.jobs.create(
            dataset.id, webhook_url=receiver.url, **tiny_text_job(tiny_bert, epochs=500)
        )
        waiting = client.jobs.create(dataset.id, webhook_url=receiver.url, **tiny_text_job(tiny_bert))
        _wait_status(client, long.id, "running")
        # One embedded worker, busy with `long`: the second job is still queued and ends at once.
        cancelled = client.jobs.cancel(waiting.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
        stopping = client.jobs.cancel(long.id)
        assert stopping.cancel_requested and stopping.status in ("running", "cancelled")
        final = client.jobs.wait(long.id, timeout=60)
        calls = receiver.wait_for(2, timeout=30)
    assert final.status == "cancelled" and final.model_id is None
    assert final.progress.epoch < 500
    with pytest.raises(APIError) as caught:
        client.jobs.cancel(long.id)
    assert (caught.value.status, caught.value.code) == (409, "job_finished")
    events = {json.loads(call.body)["job"]["id"]: json.loads(call.body)["event"] for call in calls}
    assert events == {waiting.id: "job.cancelled", long.id: "job.cancelled"}


def test_every_failure_is_one_api_error(client: Client, embedded: LiveServer, dataset: Dataset) -> None:
    with Client(embedded.url, "aplsk_wrong_key") as stranger, pytest.raises(APIError) as caught:
        stranger.jobs.list()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")

    with pytest.raises(APIError) as caught:
        client.jobs.create(dataset.id, "minilm-l6", loss_params={"clip": 2.0})
    error = caught.value
    assert (error.status, error.code) == (422, "validation_error")
    assert error.errors and error.errors[0]["loc"] == ["body", "loss", "clip"]

    with pytest.raises(APIError) as caught:
        client.jobs.get("no-such-job")
    assert (caught.value.status, caught.value.code) == (404, "not_found")

    with pytest.raises(APIError) as caught:
        client.jobs.create("no-such-dataset", "minilm-l6")
    assert (caught.value.status, caught.value.code) == (404, "dataset_not_found")

    with (
        Client(f"http://127.0.0.1:{free_port()}", embedded.key, timeout=2) as nowhere,
        pytest.raises(APIError) as caught,
    ):
        nowhere.health()
    assert (caught.value.status, caught.value.code) == (0, "unreachable")
