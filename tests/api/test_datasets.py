"""/v1/datasets with real uploads of files made here, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.api.conftest import JobPoster, Uploader, assert_problem, csv_bytes, jsonl_bytes, zip_bytes


def test_upload_csv_returns_the_dataset_and_stores_the_normalized_form(
    upload: Uploader, alice: dict[str, str], settings: Settings
) -> None:
    content = csv_bytes()
    response = upload(alice, content, filename="seasons.csv", name="Seasons")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "Seasons"
    assert body["modality"] == "text" and body["format"] == "csv"
    assert body["num_samples"] == 12
    assert body["labels"] == ["sport", "summer", "travel", "winter"]
    assert body["label_counts"] == {"sport": 4, "summer": 5, "travel": 4, "winter": 4}
    assert abs(body["label_cardinality"] - 17 / 12) < 1e-5
    assert body["size_bytes"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert isinstance(body["warnings"], list) and body["created_at"]
    stored = settings.files.dataset(body["id"])
    assert json.loads((stored / "labels.json").read_text()) == body["labels"]
    assert len((stored / "samples.jsonl").read_text().splitlines()) == 12
    assert list(settings.files.uploads.iterdir()) == []  # the raw upload is not kept


def test_upload_jsonl_and_zip(upload: Uploader, alice: dict[str, str], settings: Settings) -> None:
    jsonl = upload(alice, jsonl_bytes(), filename="seasons.jsonl")
    assert jsonl.status_code == 201, jsonl.text
    assert (jsonl.json()["format"], jsonl.json()["name"]) == ("jsonl", "seasons")
    images = upload(alice, zip_bytes(), filename="colours.zip")
    assert images.status_code == 201, images.text
    body = images.json()
    assert (body["modality"], body["format"], body["num_samples"]) == ("image", "zip", 12)
    assert body["labels"] == ["blue", "red"]
    assert (settings.files.dataset(body["id"]) / "images").is_dir()


def test_invalid_upload_is_a_problem_and_leaves_nothing(
    upload: Uploader, alice: dict[str, str], settings: Settings, client: TestClient
) -> None:
    assert_problem(upload(alice, b"text,labels\nonly one,a\n"), 422, "too_few_samples")
    assert_problem(upload(alice, b"hello", filename="notes.txt"), 415, "unsupported_format")
    no_file = client.post("/v1/datasets", headers=alice, files={"name": (None, "x")})
    assert_problem(no_file, 422, "missing_file")
    assert_problem(
        client.post("/v1/datasets", headers=alice, data={"name": "x"}), 415, "unsupported_media_type"
    )
    assert not settings.files.datasets.exists() or list(settings.files.datasets.iterdir()) == []
    assert client.get("/v1/datasets", headers=alice).json()["items"] == []


def test_upload_over_the_size_limit_is_413(settings: Settings, alice: dict[str, str]) -> None:
    from api.main import create_app

    small = settings.model_copy(update={"max_upload_bytes": 64})
    with TestClient(create_app(small)) as client:
        response = client.post("/v1/datasets", headers=alice, files={"file": ("d.csv", csv_bytes())})
    assert_problem(response, 413, "upload_too_large")


def test_get_and_list(client: TestClient, upload: Uploader, alice: dict[str, str]) -> None:
    first = upload(alice, name="first").json()
    second = upload(alice, name="second").json()
    assert client.get(f"/v1/datasets/{first['id']}", headers=alice).json() == first
    listed = client.get("/v1/datasets", headers=alice).json()
    assert [item["id"] for item in listed["items"]] == [second["id"], first["id"]]  # newest first
    assert listed["next_cursor"] is None


def test_pagination_has_no_duplicates_or_omissions(
    client: TestClient, upload: Uploader, alice: dict[str, str], bob: dict[str, str]
) -> None:
    ids = [upload(alice, name=f"d{i}").json()["id"] for i in range(5)]
    upload(bob, name="not alice's")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while pages < 10:  # bounded: a cursor that never ends fails the page count below
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/datasets", headers=alice, params=params).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        if pages == 1:  # a dataset added while paging does not shift later pages
            upload(alice, name="late")
    assert pages == 3
    assert seen == list(reversed(ids))


def test_bad_cursor_and_limit(client: TestClient, alice: dict[str, str]) -> None:
    assert_problem(client.get("/v1/datasets?cursor=garbage", headers=alice), 400, "invalid_cursor")
    body = assert_problem(client.get("/v1/datasets?limit=0", headers=alice), 422, "validation_error")
    assert body["errors"][0]["loc"] == ["query", "limit"]


def test_delete_removes_row_and_files(
    client: TestClient, alice: dict[str, str], text_dataset: dict[str, Any], settings: Settings
) -> None:
    dataset_id = text_dataset["id"]
    assert (settings.files.dataset(dataset_id)).is_dir()
    response = client.delete(f"/v1/datasets/{dataset_id}", headers=alice)
    assert response.status_code == 204 and response.content == b""
    assert not (settings.files.dataset(dataset_id)).exists()
    assert_problem(client.get(f"/v1/datasets/{dataset_id}", headers=alice), 404, "not_found")
    assert_problem(client.delete(f"/v1/datasets/{dataset_id}", headers=alice), 404, "not_found")


def test_delete_is_409_while_a_queued_job_uses_it(
    client: TestClient, alice: dict[str, str], text_dataset: dict[str, Any], post_job: JobPoster
) -> None:
    job = post_job(alice, text_dataset["id"]).json()
    assert_problem(client.delete(f"/v1/datasets/{text_dataset['id']}", headers=alice), 409, "dataset_in_use")
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).status_code == 202
    assert client.delete(f"/v1/datasets/{text_dataset['id']}", headers=alice).status_code == 204
    # the finished job survives its dataset and still shows what it trained on
    kept = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert kept["status"] == "cancelled" and kept["spec"]["dataset_id"] == text_dataset["id"]


def test_another_owner_gets_404(
    client: TestClient, bob: dict[str, str], alice: dict[str, str], text_dataset: dict[str, Any]
) -> None:
    dataset_id = text_dataset["id"]
    assert_problem(client.get(f"/v1/datasets/{dataset_id}", headers=bob), 404, "not_found")
    assert_problem(client.delete(f"/v1/datasets/{dataset_id}", headers=bob), 404, "not_found")
    assert client.get("/v1/datasets", headers=bob).json()["items"] == []
    assert client.get(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 200


def test_an_upload_being_ingested_never_takes_the_threads_of_other_requests(
    settings: Settings, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest has threads of its own (`ingest_threads`): with the routes' pool at one thread, a
    blocked ingest still leaves it free, and a second upload waits for the ingest thread."""
    import threading

    from api.main import create_app
    from api.services import uploads
    from api.state import app_state

    release, entered = threading.Event(), threading.Semaphore(0)
    ingest = uploads.ingest_and_store

    def slow_ingest(*args: Any) -> Any:
        entered.release()
        assert release.wait(30)
        return ingest(*args)

    monkeypatch.setattr(uploads, "ingest_and_store", slow_ingest)
    narrow = settings.model_copy(update={"api_threads": 1, "ingest_threads": 1})
    with TestClient(create_app(narrow)) as client:
        limiter = app_state(client.app).ingest_limiter  # type: ignore[arg-type]
        post = lambda: client.post("/v1/datasets", headers=alice, files={"file": ("d.csv", csv_bytes())})  # noqa: E731
        with ThreadPoolExecutor(2) as pool:
            uploads = [pool.submit(post)]
            assert entered.acquire(timeout=30)
            uploads.append(pool.submit(post))
            assert client.get("/v1/datasets", headers=alice).status_code == 200  # the route pool is free
            deadline = time.monotonic() + 10
            while limiter.statistics().tasks_waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (limiter.borrowed_tokens, limiter.statistics().tasks_waiting) == (1, 1)
            release.set()
            statuses = sorted(upload.result(timeout=60).status_code for upload in uploads)
    assert statuses == [201, 201]
