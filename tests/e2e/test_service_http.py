"""End to end over HTTP: `aplserve serve` with its embedded worker (SQLite, SQLAlchemy
broker) and full mode (`serve --no-worker` + `python -m worker` on PostgreSQL and
Redis). Upload, train with each loss, read metrics, download the model, cancel, and
stop the server mid-job and start it again."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.db.models import Model
from core.db.session import dispose_engines, session_scope
from core.settings import Settings
from tests.apl.synthetic import write_tiny_bert
from tests.e2e.live import (
    LiveServer,
    get_job,
    image_zip,
    post_job,
    pretty,
    series,
    text_csv,
    upload,
    wait_for_job,
)
from tests.services import unique_name
from tests.worker.harness import processes_with, release_backend, start_worker, wait_for

LOSSES = ("bce", "asl", "apl")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"hf:{write_tiny_bert(tmp_path_factory.mktemp('e2e-tiny-bert'))}"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("e2e-embedded")
    settings = Settings(data_dir=data_dir, queue_name=unique_name("aplserve_e2e_q"), job_lease_seconds=5)
    server = LiveServer(settings, data_dir)
    server.start()
    try:
        yield server
    finally:
        server.close()
        dispose_engines()


def text_spec(dataset_id: str, model: str, loss: str = "apl", **hyperparameters: Any) -> dict[str, Any]:
    hp = {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16, "seed": 0}
    return {
        "dataset_id": dataset_id,
        "base_model": model,
        "loss": {"name": loss},
        "hyperparameters": hp | hyperparameters,
    }


def artifact_path(settings: Settings, model_id: str) -> Path:
    with session_scope(settings) as session:
        relative = session.scalar(select(Model.artifact_path).where(Model.id == model_id))
    assert relative is not None
    return settings.data_dir / relative


def check_model(server: LiveServer, job: dict[str, Any], modality: str) -> None:
    """The Model the job produced: API fields, the downloaded artifact and the file on disk agree."""
    with server.client() as client:
        response = client.get(f"/v1/models/{job['model_id']}")
        assert response.status_code == 200, response.text
        model = response.json()
        assert model["job_id"] == job["id"] and model["modality"] == modality
        assert set(model["thresholds"]) == set(model["labels"])
        download = client.get(f"/v1/models/{job['model_id']}/artifact")
        assert download.status_code == 200, download.text
    digest = model["artifact"]["sha256"]
    assert hashlib.sha256(download.content).hexdigest() == digest
    assert len(download.content) == model["artifact"]["size_bytes"]
    on_disk = artifact_path(server.settings, job["model_id"])
    assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == digest


def test_each_loss_trains_a_model_over_http(embedded: LiveServer, tiny_bert: str) -> None:
    with embedded.client() as client:
        dataset = upload(client, text_csv(48), "keywords.csv")
        assert dataset["modality"] == "text" and dataset["labels"] == ["animal", "color", "food"]
        jobs = {loss: post_job(client, text_spec(dataset["id"], tiny_bert, loss))["id"] for loss in LOSSES}
        for loss, job_id in jobs.items():
            job = wait_for_job(client, job_id)
            assert job["status"] == "succeeded", (loss, pretty(job), embedded.log()[-3000:])
            assert job["error"] is None and job["model_id"]
            assert job["spec"]["loss"]["name"] == loss
            assert job["progress"]["epoch"] == 3 and job["progress"]["step"] == job["progress"]["steps"]
            assert 0.0 <= job["best_metrics"]["map"] <= 1.0

            points = series(client, job_id)
            assert [p["epoch"] for p in points] == [1, 2, 3], loss
            for p in points:
                assert 0.0 <= p["map"] <= 1.0 and 0.0 <= p["micro_f1"] <= 1.0
                assert math.isfinite(p["train_loss"]) and math.isfinite(p["val_loss"])
                assert all(0.0 <= ap <= 1.0 for ap in p["per_class_ap"].values())
            losses = [p["train_loss"] for p in points]
            assert losses[-1] < losses[0], (loss, losses)  # an easy dataset: training learns
            check_model(embedded, job, "text")


#: One job per policy on the demo movies (tiny BERT): what the evaluation must say about each.
DECISIONS = {
    "max_f1": {"policy": "max_f1", "min_labels": 1},
    "precision_at": {"policy": "precision_at", "target": 0.6},
    "recall_at": {"policy": "recall_at", "target": 0.7},
    "fixed": {"policy": "fixed", "target": 0.35, "min_labels": 2},
}


def _check_policy(decision: dict[str, Any], evaluation: dict[str, Any], model: dict[str, Any]) -> None:
    """Every label's threshold is what the policy says, and a target is met exactly when claimed."""
    assert (
        evaluation["decision"] | {"rule": None} == {"target": None, "min_labels": 0, "rule": None} | decision
    )
    for entry in evaluation["per_label"]:
        assert entry["threshold"] == pytest.approx(model["thresholds"][entry["label"]])
        assert len(entry["pr_curve"]["thresholds"]) <= 101
        if decision["policy"] == "fixed":
            assert entry["threshold"] == decision["target"] and entry["threshold_source"] == "tuned"
        elif entry["threshold_source"] == "fallback":
            assert entry["threshold"] == 0.5 and entry["threshold_reason"]
        elif decision["policy"] in ("precision_at", "recall_at"):
            measured = entry["precision" if decision["policy"] == "precision_at" else "recall"]
            assert entry["target_reached"] == (measured >= decision["target"]), entry["label"]
    calibration = evaluation["calibration"]
    assert calibration["method"] == "auto" and calibration["ece_bins"] == 15
    assert 0.0 <= calibration["ece_after"] <= 1.0 and 0.0 <= calibration["ece_before"] <= 1.0


def test_each_decision_policy_trains_on_the_demo_movies_over_http(
    embedded: LiveServer, tiny_bert: str, tmp_path: Path
) -> None:
    """`aplserve demo-data` movies, one job per decision policy: each is evaluated and decides
    by its policy, and predictions keep its min_labels."""
    from aplserve.demo_data import write_demo_data

    csv_path = next(path for path in write_demo_data(tmp_path) if path.suffix == ".csv")
    with embedded.client() as client:
        dataset = upload(client, csv_path.read_bytes(), "movies-genres.csv")
        hp = {"epochs": 1, "batch_size": 64, "learning_rate": 3e-3, "max_length": 24}
        jobs = {
            name: post_job(client, text_spec(dataset["id"], tiny_bert, **hp) | {"decision": decision})["id"]
            for name, decision in DECISIONS.items()
        }
        for name, job_id in jobs.items():
            job = wait_for_job(client, job_id, timeout=300)
            assert job["status"] == "succeeded", (name, pretty(job), embedded.log()[-3000:])
            model = client.get(f"/v1/models/{job['model_id']}").json()
            evaluation = client.get(f"/v1/models/{job['model_id']}/evaluation").json()
            assert evaluation["model_id"] == model["id"] and evaluation["split"] == "validation"
            assert [entry["label"] for entry in evaluation["per_label"]] == dataset["labels"]
            _check_policy(DECISIONS[name], evaluation, model)
            probe = {"inputs": ["Toy Story (1995)", "zzz"], "threshold": 1.0}
            predictions = client.post(f"/v1/models/{model['id']}/predict", json=probe).json()["predictions"]
            wanted = DECISIONS[name].get("min_labels", 0)
            assert all(len(p["labels"]) == len(p["added_by_min_labels"]) == wanted for p in predictions)


def test_cancel_over_http_stops_a_running_job_promptly(embedded: LiveServer, tiny_bert: str) -> None:
    with embedded.client() as client:
        dataset = upload(client, text_csv(48, seed=1), "cancel.csv")
        job = post_job(client, text_spec(dataset["id"], tiny_bert, epochs=300))
        wait_for(
            lambda: (j := get_job(client, job["id"]))["status"] == "running" and j["progress"]["step"] > 0,
            120,
            "the job to take its first steps",
        )
        asked = time.monotonic()
        response = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202, response.text
        done = wait_for_job(client, job["id"], timeout=30)
        waited = time.monotonic() - asked
    assert done["status"] == "cancelled", pretty(done)
    assert waited < 10, f"cancel took {waited:.1f} s"
    assert done["model_id"] is None and done["error"] is None and done["progress"]["epoch"] < 300


def test_sigterm_stops_server_and_worker_and_the_job_resumes_after_restart(
    embedded: LiveServer, tiny_bert: str
) -> None:
    epochs = 8
    with embedded.client() as client:
        dataset = upload(client, text_csv(64, seed=2), "resume.csv")
        job = post_job(client, text_spec(dataset["id"], tiny_bert, epochs=epochs))
    checkpoint = embedded.settings.files.checkpoint(job["id"])
    wait_for(checkpoint.is_file, 120, "the first epoch checkpoint", interval=0.05)

    serve_pid = embedded.process.pid if embedded.process else 0
    took = embedded.stop()  # SIGTERM, as `docker stop` or systemd sends it
    assert took < 20, f"serve took {took:.1f} s to stop"
    assert processes_with(f"--supervisor-pid={serve_pid}") == [], "the embedded worker outlived serve"
    assert "job " + job["id"] + " released" in embedded.log()

    embedded.start()
    with embedded.client() as client:
        stopped = get_job(client, job["id"])
        assert stopped["status"] in ("queued", "running", "succeeded"), pretty(stopped)
        done = wait_for_job(client, job["id"])
        assert done["status"] == "succeeded", (pretty(done), embedded.log()[-3000:])
        assert done["attempts"] == 1  # a shutdown does not use up an attempt
        points = series(client, job["id"])
    assert [p["epoch"] for p in points] == list(range(1, epochs + 1))
    assert "resumes from its last checkpoint" in embedded.log()
    check_model(embedded, done, "text")


@pytest.fixture
def full_mode(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[tuple[LiveServer, Settings]]:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=postgres_url,
        broker_url=redis_url,
        queue_name=unique_name("aplserve_e2e_q"),
    )
    settings.data_dir.mkdir()
    server = LiveServer(settings, tmp_path, worker=False)
    try:
        yield server, settings
    finally:
        server.close()
        release_backend(settings)


def test_full_mode_trains_an_image_model(full_mode: tuple[LiveServer, Settings]) -> None:
    server, settings = full_mode
    server.start()  # migrates the PostgreSQL database, no embedded worker
    worker = start_worker(settings, settings.data_dir / "worker.log")
    try:
        with server.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"database": "ok", "broker": "ok", "storage": "ok"}
            dataset = upload(client, image_zip(24), "squares.zip")
            assert dataset["modality"] == "image" and dataset["num_samples"] == 24
            spec = {
                "dataset_id": dataset["id"],
                "base_model": "timm:resnet10t",
                "loss": {"name": "apl"},
                "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "image_size": 32},
            }
            job = wait_for_job(client, post_job(client, spec)["id"])
            assert job["status"] == "succeeded", (pretty(job), worker.log()[-3000:])
            points = series(client, job["id"])
            assert [p["epoch"] for p in points] == [1, 2]
            assert all(0.0 <= p["map"] <= 1.0 for p in points)
        check_model(server, job, "image")
        assert worker.terminate() < 15
    finally:
        worker.close()
