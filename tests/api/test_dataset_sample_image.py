"""GET /v1/datasets/{id}/samples/{index}/image: one stored image, owner-checked (dashboard thumbnails)."""

from __future__ import annotations

import io
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from tests.api.conftest import Uploader, assert_problem, zip_bytes


def _image_dataset(upload: Uploader, headers: dict[str, str]) -> dict[str, Any]:
    response = upload(headers, zip_bytes(), filename="colours.zip")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_sample_image_serves_the_stored_file_of_that_sample(
    client: TestClient, upload: Uploader, alice: dict[str, str]
) -> None:
    dataset = _image_dataset(upload, alice)
    for index in range(dataset["num_samples"]):  # zip_bytes: red on even, blue on multiples of 3
        response = client.get(f"/v1/datasets/{dataset['id']}/samples/{index}/image", headers=alice)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == "private, max-age=3600"
        pixel = Image.open(io.BytesIO(response.content)).convert("RGB").getpixel((8, 8))
        assert pixel == (255 if index % 2 == 0 else 0, 0, 255 if index % 3 == 0 else 0), index


def test_sample_image_is_owner_isolated_and_refuses_what_is_not_an_image(
    client: TestClient,
    upload: Uploader,
    alice: dict[str, str],
    bob: dict[str, str],
    text_dataset: dict[str, Any],
) -> None:
    dataset = _image_dataset(upload, alice)
    url = f"/v1/datasets/{dataset['id']}/samples"
    assert_problem(client.get(f"{url}/0/image", headers=bob), 404, "not_found")
    assert_problem(client.get(f"{url}/{dataset['num_samples']}/image", headers=alice), 404, "not_found")
    assert_problem(client.get(f"{url}/-1/image", headers=alice), 422, "validation_error")
    text_url = f"/v1/datasets/{text_dataset['id']}/samples/0/image"
    assert_problem(client.get(text_url, headers=alice), 404, "not_found")
    assert client.get(f"{url}/0/image").status_code == 401
