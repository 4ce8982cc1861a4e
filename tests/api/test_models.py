"""The model registry: list, get, artifact download (tar and ONNX) and the light API import."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.state import app_state
from core.settings import Settings
from tests.api.conftest import assert_problem
from tests.api.serving_support import (
    RARE_LABEL,
    TEXT_INPUTS,
    Trained,
    pil,
    register,
    sample_images,
    trained_models,
)

SQLITE_ONLY = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
ARTIFACT_MEMBERS = {"config.json", "model.safetensors", "encoder", "tokenizer"}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    return trained_models(tmp_path_factory.getbasetemp() / "serving-models")


def test_list_and_get_models(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    bob: dict[str, str],
    trained: dict[str, Trained],
) -> None:
    text_id = register(settings, trained["text"], "alice")
    image_id = register(settings, trained["image"], "alice")
    register(settings, trained["text"], "bob")

    first = client.get("/v1/models?limit=1", headers=alice)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [item["id"] for item in page["items"]] == [image_id]  # newest first
    assert page["next_cursor"]
    second = client.get(f"/v1/models?limit=1&cursor={page['next_cursor']}", headers=alice).json()
    assert [item["id"] for item in second["items"]] == [text_id] and second["next_cursor"] is None
    assert_problem(client.get("/v1/models?cursor=garbage", headers=alice), 400, "invalid_cursor")

    body = client.get(f"/v1/models/{text_id}", headers=alice).json()
    fields = trained["text"].fields
    assert body["id"] == text_id and body["modality"] == "text"
    assert body["base_model"] == fields["base_model"] and body["base_model"].startswith("hf:")
    assert body["labels"] == fields["labels"] and RARE_LABEL in body["labels"]
    assert body["thresholds"] == pytest.approx(fields["thresholds"])
    # The label seen once cannot be tuned: it keeps the global threshold, and says so.
    assert RARE_LABEL in body["threshold_fallback_labels"]
    assert body["thresholds"][RARE_LABEL] == body["global_threshold"] == 0.5
    assert body["metrics"]["fallback_labels"] == body["threshold_fallback_labels"]
    assert {"map", "micro_f1", "macro_f1", "per_class_ap", "best_epoch"} <= set(body["metrics"])
    assert body["artifact"] == {
        "sha256": fields["sha256"],
        "size_bytes": fields["size_bytes"],
        "url": f"/v1/models/{text_id}/artifact",
        "formats": ["tar", "onnx"],
    }
    assert body["job_id"] and body["dataset_id"] is None and body["created_at"]
    job = client.get(f"/v1/jobs/{body['job_id']}", headers=alice).json()
    assert job["model_id"] == text_id and job["status"] == "succeeded"
    bob_items = client.get("/v1/models", headers=bob).json()["items"]
    assert len(bob_items) == 1 and bob_items[0]["id"] not in (text_id, image_id)


def test_evaluation_is_stored_per_model_and_owner_isolated(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    bob: dict[str, str],
    trained: dict[str, Trained],
) -> None:
    model_id = register(settings, trained["text"], "alice")
    model = client.get(f"/v1/models/{model_id}", headers=alice).json()
    assert model["evaluation_url"] == f"/v1/models/{model_id}/evaluation"
    assert model["decision"]["calibration"] == "auto" and model["decision"]["policy"] == "max_f1"
    response = client.get(model["evaluation_url"], headers=alice)
    assert response.status_code == 200, response.text
    body = response.json()
    stored = trained["text"].fields["evaluation"]
    # Exactly what publishing stored (with_min_labels is null: this model's min_labels is 0), with the
    # job's linear baselines beside it.
    baselines = trained["text"].fields["metrics"]["baselines"]
    assert model["comparison"] == baselines["comparison"] and model["kind"] == "fine_tuned"
    assert body == {"model_id": model_id, "with_min_labels": None, "baselines": baselines, **stored}
    assert body["split"] == "validation" and body["num_samples"] > 0
    assert {e["label"] for e in body["per_label"]} == set(model["labels"])
    for entry in body["per_label"]:
        assert entry["threshold"] == pytest.approx(model["thresholds"][entry["label"]])
        assert len(entry["pr_curve"]["precision"]) == len(entry["pr_curve"]["recall"]) <= 101
        assert entry["temperature"] == pytest.approx(model["decision"]["temperatures"][entry["label"]])
        # Each label says which calibrator it got (and why), as the model row does.
        assert entry["calibration"] == model["decision"]["calibration_methods"][entry["label"]]
        assert entry["calibration_reason"]
    rare = next(e for e in body["per_label"] if e["label"] == RARE_LABEL)
    assert rare["threshold_source"] == "fallback" and rare["threshold"] == 0.5
    # At most one positive: too few to tune a threshold or to fit a calibrator, and it says so.
    assert rare["threshold_reason"] == (
        f"{rare['support']} validation positives: fewer than 5, too few to tune a threshold"
    )
    assert rare["calibration"] == "none" and "too few to calibrate" in rare["calibration_reason"]
    calibration = body["calibration"]
    assert calibration["method"] == "auto" and calibration["ece_bins"] == 15
    assert "out-of-fold" in calibration["ece_measured_on"]
    assert calibration["per_label"][RARE_LABEL]["method"] == "none"
    assert isinstance(calibration["ece_before"], float) and isinstance(calibration["ece_after"], float)
    assert assert_problem(client.get(model["evaluation_url"], headers=bob), 404, "not_found")
    assert_problem(client.get("/v1/models/nope/evaluation", headers=alice), 404, "not_found")


def test_models_published_before_evaluations_have_none_and_min_labels_zero(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained]
) -> None:
    from dataclasses import replace

    old = replace(trained["text"], record=replace(trained["text"].record, decision=None, evaluation=None))
    model_id = register(settings, old, "alice")
    model = client.get(f"/v1/models/{model_id}", headers=alice).json()
    assert model["decision"] is None and model["evaluation_url"] is None
    assert_problem(
        client.get(f"/v1/models/{model_id}/evaluation", headers=alice), 404, "evaluation_unavailable"
    )
    body = client.post(
        f"/v1/models/{model_id}/predict", json={"inputs": TEXT_INPUTS, "threshold": 1.0}, headers=alice
    ).json()
    assert body["min_labels"] == 0 and all(p["labels"] == [] for p in body["predictions"])


def test_artifact_download_is_the_published_archive(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained], tmp_path: Path
) -> None:
    from apl.inference import load

    model_id = register(settings, trained["text"], "alice")
    response = client.get(f"/v1/models/{model_id}/artifact", headers=alice)
    assert response.status_code == 200, response.text
    sha = trained["text"].fields["sha256"]
    assert response.headers["content-type"] == "application/x-tar"
    assert f'filename="aplserve-model-{model_id}.tar"' in response.headers["content-disposition"]
    assert response.headers["etag"] == f'"{sha}"'
    assert response.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:"
    assert hashlib.sha256(response.content).hexdigest() == sha
    assert int(response.headers["content-length"]) == trained["text"].fields["size_bytes"]
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        names = archive.getnames()
        member = archive.extractfile("config.json")
        assert member is not None
        config = json.loads(member.read())
    assert {name.split("/")[0] for name in names} == ARTIFACT_MEMBERS
    assert not any(name.endswith((".pkl", ".pt", ".bin", ".pth")) for name in names)
    assert config["labels"] == trained["text"].fields["labels"] and config["architecture"]
    assert config["preprocessing"]["max_length"] == 32 and RARE_LABEL in config["fallback_labels"]

    cached = client.get(f"/v1/models/{model_id}/artifact", headers=alice | {"If-None-Match": f'"{sha}"'})
    assert cached.status_code == 304 and not cached.content

    path = tmp_path / "model.tar"
    path.write_bytes(response.content)
    predictor = load(path, device="cpu")
    assert predictor.labels == trained["text"].fields["labels"]
    assert predictor.predict_proba(TEXT_INPUTS).shape == (len(TEXT_INPUTS), len(predictor.labels))


def _onnx_download(client: TestClient, headers: dict[str, str], model_id: str) -> tuple[Any, zipfile.ZipFile]:
    response = client.get(f"/v1/models/{model_id}/artifact?format=onnx", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    assert f"aplserve-model-{model_id}.onnx.zip" in response.headers["content-disposition"]
    return response, zipfile.ZipFile(io.BytesIO(response.content))


@SQLITE_ONLY
def test_onnx_export_matches_pytorch(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained], tmp_path: Path
) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from apl.inference import load

    # Text: the tokenizer from the zip feeds the graph; sigmoid probabilities match PyTorch.
    text_id = register(settings, trained["text"], "alice")
    response, archive = _onnx_download(client, alice, text_id)
    assert {"model.onnx", "config.json", "tokenizer/tokenizer.json"} <= set(archive.namelist())
    config = json.loads(archive.read("config.json"))
    fields = trained["text"].fields
    assert config["labels"] == fields["labels"] and config["thresholds"] == pytest.approx(
        fields["thresholds"]
    )
    assert config["model_id"] == text_id and config["output"] == "probabilities"
    session = ort.InferenceSession(archive.read("model.onnx"), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["aplserve.labels"]) == fields["labels"]
    assert json.loads(metadata["aplserve.thresholds"]) == pytest.approx(fields["thresholds"])
    archive.extractall(tmp_path / "onnx-text")
    tokenizer = AutoTokenizer.from_pretrained(
        str(tmp_path / "onnx-text" / "tokenizer"), local_files_only=True
    )
    max_length = config["preprocessing"]["max_length"]
    encoded = tokenizer(
        TEXT_INPUTS, padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    onnx_probs = session.run(["probabilities"], {name: encoded[name] for name in config["inputs"]})[0]
    torch_probs = load(trained["text"].archive, device="cpu").predict_proba(TEXT_INPUTS)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    again, _ = _onnx_download(client, alice, text_id)  # served from the cache: same bytes
    assert again.headers["etag"] == response.headers["etag"]

    # Image: the timm network on pixel_values preprocessed as the config says.
    image_id = register(settings, trained["image"], "alice")
    _, archive = _onnx_download(client, alice, image_id)
    config = json.loads(archive.read("config.json"))
    assert config["inputs"] == ["pixel_values"] and config["preprocessing"]["image_size"] == 32
    session = ort.InferenceSession(archive.read("model.onnx"), providers=["CPUExecutionProvider"])
    predictor = load(trained["image"].archive, device="cpu")
    images = [pil(data) for data in sample_images(trained["image"])]
    pixels = np.stack([_preprocess(image, config["preprocessing"]) for image in images])
    onnx_probs = session.run(["probabilities"], {"pixel_values": pixels})[0]
    np.testing.assert_allclose(onnx_probs, predictor.predict_proba(images), atol=1e-4)


def _preprocess(image: Any, preprocessing: dict[str, Any]) -> np.ndarray:
    """What an ONNX consumer does with config.json: resize (squash), scale, normalise, CHW."""
    from PIL import Image

    size = preprocessing["image_size"]
    method = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    resized = image.resize((size, size), method[preprocessing["interpolation"]])
    array = np.asarray(resized, dtype=np.float32) / 255.0
    array = (array - np.array(preprocessing["mean"], dtype=np.float32)) / np.array(
        preprocessing["std"], dtype=np.float32
    )
    return array.transpose(2, 0, 1).astype(np.float32)


def test_deleting_a_model_removes_it_its_files_and_its_loaded_copy(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    bob: dict[str, str],
    trained: dict[str, Trained],
) -> None:
    model_id = register(settings, trained["text"], "alice")
    kept_id = register(settings, trained["text"], "alice")
    job_id = client.get(f"/v1/models/{model_id}", headers=alice).json()["job_id"]
    predict = {"inputs": TEXT_INPUTS[:2]}
    assert client.post(f"/v1/models/{model_id}/predict", headers=alice, json=predict).status_code == 200
    onnx = client.get(f"/v1/models/{model_id}/artifact?format=onnx", headers=alice)
    assert onnx.status_code == 200
    archive = settings.data_dir / "artifacts" / f"{model_id}.tar"
    export = settings.data_dir / "artifacts" / f"{model_id}.onnx.zip"
    assert archive.is_file() and export.is_file()
    assert model_id in app_state(client.app).serving.loaded()

    assert_problem(client.delete(f"/v1/models/{model_id}", headers=bob), 404, "not_found")
    deleted = client.delete(f"/v1/models/{model_id}", headers=alice)
    assert deleted.status_code == 204 and deleted.content == b""

    assert_problem(client.get(f"/v1/models/{model_id}", headers=alice), 404, "not_found")
    assert_problem(
        client.post(f"/v1/models/{model_id}/predict", headers=alice, json=predict), 404, "not_found"
    )
    assert_problem(client.delete(f"/v1/models/{model_id}", headers=alice), 404, "not_found")
    assert not archive.exists() and not export.exists()
    assert trained["text"].archive.is_file()  # the registered file was a link; its source stays
    assert model_id not in app_state(client.app).serving.loaded()
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert job["status"] == "succeeded" and job["model_id"] is None
    listed = [item["id"] for item in client.get("/v1/models", headers=alice).json()["items"]]
    assert listed == [kept_id]
    assert client.post(f"/v1/models/{kept_id}/predict", headers=alice, json=predict).status_code == 200


def test_importing_the_api_does_not_import_torch(tmp_path: Path) -> None:
    """The API process starts light: building the app and the serving engine loads no torch."""
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "import api.main\nimport api.state\n"
        "assert 'torch' not in sys.modules, 'api.main imported torch'\n"
        "app = api.main.create_app()\n"
        "with TestClient(app) as client:\n"
        "    assert client.get('/healthz').status_code == 200\n"
        "    assert api.state.app_state(app).serving is not None\n"
        "    assert '/v1/models/{model_id}/predict' in client.get('/openapi.json').json()['paths']\n"
        "heavy = [m for m in ('torch', 'transformers', 'timm', 'onnx', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {"APLSERVE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
