"""POST /v1/models/{id}/predict against real trained tiny models (text and image).

Predictions over HTTP must equal `apl.inference.load` on the downloaded artifact;
thresholds, overrides and top_k are checked against those probabilities.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.state import app_state
from core.settings import Settings
from tests.api.conftest import assert_problem
from tests.api.serving_support import (
    POLICIES,
    RARE_LABEL,
    TEXT_INPUTS,
    Trained,
    b64,
    pil,
    policy_models,
    register,
    sample_images,
    trained_models,
)
from tests.concurrency import call_concurrently

SQLITE_ONLY = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
TOLERANCE = 1e-5
#: Bounds every wait for concurrent requests or an engine scenario (they take seconds).
CALLS_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    return trained_models(tmp_path_factory.getbasetemp() / "serving-models")


@pytest.fixture(scope="session")
def by_policy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    return policy_models(tmp_path_factory.getbasetemp() / "serving-models")


@pytest.fixture(scope="session")
def local(trained: dict[str, Trained]) -> dict[str, Any]:
    """The predictors `apl.inference.load` builds from the archives (the reference answers)."""
    from apl.inference import load

    return {kind: load(item.archive, device="cpu") for kind, item in trained.items()}


@contextmanager
def serving_client(settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update=overrides))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _predict(client: TestClient, headers: dict[str, str], model_id: str, **body: Any) -> Any:
    return client.post(f"/v1/models/{model_id}/predict", json=body, headers=headers)


def _expected_labels(scores: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    passing = [label for label, score in scores.items() if score >= thresholds[label]]
    return sorted(passing, key=lambda label: (-scores[label], list(scores).index(label)))


def _check_against(predictions: list[dict[str, Any]], probs: np.ndarray, labels: list[str]) -> None:
    assert len(predictions) == len(probs)
    for prediction, row in zip(predictions, probs, strict=True):
        assert list(prediction["scores"]) == labels
        np.testing.assert_allclose([prediction["scores"][label] for label in labels], row, atol=TOLERANCE)


def _download(client: TestClient, headers: dict[str, str], model_id: str, tmp_path: Path) -> Path:
    response = client.get(f"/v1/models/{model_id}/artifact", headers=headers)
    assert response.status_code == 200, response.text
    path = tmp_path / "downloaded.tar"
    path.write_bytes(response.content)
    return path


def test_text_predictions_equal_the_downloaded_artifact(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained], tmp_path: Path
) -> None:
    from apl.inference import load

    model_id = register(settings, trained["text"], "alice")
    response = _predict(client, alice, model_id, inputs=TEXT_INPUTS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == model_id
    predictor = load(_download(client, alice, model_id, tmp_path), device="cpu")
    probs = predictor.predict_proba(TEXT_INPUTS)
    _check_against(body["predictions"], probs, predictor.labels)
    tuned = trained["text"].fields["thresholds"]
    assert body["thresholds"] == pytest.approx(tuned)
    assert RARE_LABEL in predictor.labels
    for prediction in body["predictions"]:
        assert prediction["labels"] == _expected_labels(prediction["scores"], tuned)


def test_image_predictions_base64_and_multipart_equal_the_artifact(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained], local: Any
) -> None:
    model_id = register(settings, trained["image"], "alice")
    images = sample_images(trained["image"])
    as_json = _predict(client, alice, model_id, inputs=[{"image_base64": b64(data)} for data in images])
    assert as_json.status_code == 200, as_json.text
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    as_multipart = client.post(f"/v1/models/{model_id}/predict", files=files, headers=alice)
    assert as_multipart.status_code == 200, as_multipart.text
    probs = local["image"].predict_proba([pil(data) for data in images])
    labels = local["image"].labels
    _check_against(as_json.json()["predictions"], probs, labels)
    _check_against(as_multipart.json()["predictions"], probs, labels)
    # A data: URL prefix is accepted too.
    data_url = _predict(
        client, alice, model_id, inputs=[{"image_base64": "data:image/png;base64," + b64(images[0])}]
    )
    _check_against(data_url.json()["predictions"], probs[:1], labels)


@SQLITE_ONLY
def test_threshold_overrides_and_top_k(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained], local: Any
) -> None:
    model_id = register(settings, trained["text"], "alice")
    labels = local["text"].labels
    probs = local["text"].predict_proba(TEXT_INPUTS)
    tuned = trained["text"].fields["thresholds"]

    everything = _predict(client, alice, model_id, inputs=TEXT_INPUTS, threshold=0.0).json()
    assert all(set(p["labels"]) == set(labels) for p in everything["predictions"])
    assert everything["thresholds"] == dict.fromkeys(labels, 0.0)
    nothing = _predict(client, alice, model_id, inputs=TEXT_INPUTS, threshold=1.0).json()
    assert all(p["labels"] == [] for p in nothing["predictions"])

    # A global threshold between the scores of the first input splits its labels exactly there.
    row = sorted(probs[0].tolist(), reverse=True)
    middle = (row[1] + row[2]) / 2
    split = _predict(client, alice, model_id, inputs=TEXT_INPUTS[:1], threshold=middle).json()
    assert len(split["predictions"][0]["labels"]) == 2

    # Per-label: one label forced on, one forced off, the others keep their tuned thresholds.
    on, off = labels[0], labels[1]
    per_label = _predict(client, alice, model_id, inputs=TEXT_INPUTS, threshold={on: 0.0, off: 1.0}).json()
    applied = tuned | {on: 0.0, off: 1.0}
    assert per_label["thresholds"] == pytest.approx(applied)
    for prediction in per_label["predictions"]:
        assert on in prediction["labels"] and off not in prediction["labels"]
        assert prediction["labels"] == _expected_labels(prediction["scores"], applied)

    # top_k keeps the k best of the labels that pass; scores still hold every label.
    top = _predict(client, alice, model_id, inputs=TEXT_INPUTS, threshold=0.0, top_k=2).json()
    for prediction, scores in zip(top["predictions"], probs, strict=True):
        best = [labels[j] for j in np.argsort(-scores, kind="stable")[:2]]
        assert prediction["labels"] == best
        assert len(prediction["scores"]) == len(labels)
    strict_top = _predict(client, alice, model_id, inputs=TEXT_INPUTS, threshold=1.0, top_k=3).json()
    assert all(p["labels"] == [] for p in strict_top["predictions"])

    # Multipart takes the same options as form fields (image model).
    image_id = register(settings, trained["image"], "alice")
    image_labels = local["image"].labels
    files = [("files", ("a.png", sample_images(trained["image"])[0], "image/png"))]
    form = client.post(
        f"/v1/models/{image_id}/predict",
        files=files,
        data={"threshold": f'{{"{image_labels[0]}": 0.0}}', "top_k": "1"},
        headers=alice,
    ).json()
    image_probs = local["image"].predict_proba([pil(files[0][1][1])])[0]
    applied = trained["image"].fields["thresholds"] | {image_labels[0]: 0.0}
    passing = [j for j, label in enumerate(image_labels) if image_probs[j] >= applied[label]]
    best = max(passing, key=lambda j: image_probs[j])
    assert form["predictions"][0]["labels"] == [image_labels[best]]
    assert form["thresholds"] == pytest.approx(applied)


def _png(size: tuple[int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def _js(**body: Any) -> dict[str, Any]:
    return {"json": body}


def _img(data: bytes) -> dict[str, str]:
    return {"image_base64": b64(data)}


def _files(*blobs: bytes, field: str = "files", **form: str) -> dict[str, Any]:
    parts = [(field, (f"{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]
    return {"files": parts, "data": form} if form else {"files": parts}


def _tiff() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="TIFF")
    return out.getvalue()


EMPTY_FORM = b'--b\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n1\r\n--b--\r\n'


def _bad_cases() -> list[tuple[str, str, dict[str, Any], int, str]]:
    """(id, model kind, keyword arguments for client.post, status, code), under LIMITS below."""
    small = _png((8, 8))
    big_pixels = _png((64, 64))  # 4096 px, over the pixel limit; few bytes
    raw = lambda body, media: {"content": body, "headers": {"content-type": media}}  # noqa: E731
    return [
        ("empty-text", "text", _js(inputs=[]), 422, "empty_inputs"),
        ("empty-image", "image", _js(inputs=[]), 422, "empty_inputs"),
        ("empty-files", "image", raw(EMPTY_FORM, "multipart/form-data; boundary=b"), 422, "empty_inputs"),
        ("too-many", "text", _js(inputs=["x"] * 9), 422, "too_many_inputs"),
        ("too-many-images", "image", _js(inputs=[_img(small)] * 9), 422, "too_many_inputs"),
        ("too-many-files", "image", _files(*[small] * 12), 422, "too_many_inputs"),
        ("text-too-long", "text", _js(inputs=["ok", "y" * 201]), 422, "text_too_long"),
        ("image-to-text-model", "text", _js(inputs=[_img(small)]), 422, "wrong_modality"),
        ("files-to-text-model", "text", _files(small), 422, "wrong_modality"),
        ("text-to-image-model", "image", _js(inputs=["a cat"]), 422, "wrong_modality"),
        ("mixed", "image", _js(inputs=[_img(small), "x"]), 422, "wrong_modality"),
        ("bad-base64", "image", _js(inputs=[{"image_base64": "not base64!"}]), 422, "invalid_image"),
        ("not-an-image", "image", _js(inputs=[_img(b"hello world")]), 422, "invalid_image"),
        ("truncated-png", "image", _js(inputs=[_img(small[:40])]), 422, "invalid_image"),
        ("tiff-not-allowed", "image", _js(inputs=[_img(_tiff())]), 422, "invalid_image"),
        ("undecodable-file", "image", _files(b"\x89PNG garbage"), 422, "invalid_image"),
        ("empty-file", "image", _files(b""), 422, "invalid_image"),
        ("image-bytes", "image", _js(inputs=[_img(b"\x00" * 3000)]), 413, "image_too_large"),
        ("image-file-bytes", "image", _files(b"\x00" * 3000), 413, "image_too_large"),
        ("image-pixels", "image", _js(inputs=[_img(big_pixels)]), 422, "image_too_many_pixels"),
        ("image-file-pixels", "image", _files(big_pixels), 422, "image_too_many_pixels"),
        ("unknown-label", "text", _js(inputs=["x"], threshold={"nope": 0.2}), 422, "unknown_label"),
        ("unknown-label-form", "image", _files(small, threshold='{"nope": 0.2}'), 422, "unknown_label"),
        ("threshold-range", "text", _js(inputs=["x"], threshold=1.5), 422, "validation_error"),
        (
            "label-threshold-range",
            "text",
            _js(inputs=["x"], threshold={"animal": -0.1}),
            422,
            "validation_error",
        ),
        ("top-k-zero", "text", _js(inputs=["x"], top_k=0), 422, "validation_error"),
        ("min-labels-negative", "text", _js(inputs=["x"], min_labels=-1), 422, "validation_error"),
        ("bad-form-min-labels", "image", _files(small, min_labels="x"), 422, "validation_error"),
        ("unknown-field", "text", _js(input=["x"]), 422, "validation_error"),
        ("not-a-list", "text", _js(inputs="x"), 422, "validation_error"),
        ("not-json", "text", raw(b"{nope", "application/json"), 422, "validation_error"),
        ("wrong-form-field", "image", _files(small, field="file"), 422, "validation_error"),
        ("bad-form-top-k", "image", _files(small, top_k="x"), 422, "validation_error"),
        ("bad-form-threshold", "image", _files(small, threshold="{oops"), 422, "validation_error"),
        ("media-type", "text", raw(b"inputs=x", "text/plain"), 415, "unsupported_media_type"),
        ("body-too-large", "text", _js(inputs=["z" * 150] * 40), 413, "request_too_large"),
    ]


BAD = _bad_cases()
LIMITS = {
    "predict_max_inputs": 8,
    "predict_max_text_chars": 200,
    "predict_max_image_bytes": 2000,
    "predict_max_image_pixels": 1024,
    "predict_max_body_bytes": 5000,
}


@SQLITE_ONLY
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"top_k": 1},
        {"threshold": 0.0, "top_k": 2},
        {"threshold": 0.3},
        {"threshold": 0.3, "top_k": 1},
        {"threshold": 1.0, "min_labels": 1},
        {"threshold": 0.0, "top_k": 1, "min_labels": 3},
    ],
)
def test_the_api_and_apl_inference_return_the_same_labels(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    trained: dict[str, Trained],
    local: Any,
    options: dict[str, Any],
) -> None:
    """One decision rule: predict over HTTP and `Predictor.predict` on the artifact agree label for label."""
    model_id = register(settings, trained["text"], "alice")
    over_http = _predict(client, alice, model_id, inputs=TEXT_INPUTS, **options).json()["predictions"]
    in_process = local["text"].predict(TEXT_INPUTS, **options)
    assert [p["labels"] for p in over_http] == [p.labels for p in in_process]
    assert [p["added_by_min_labels"] for p in over_http] == [p.added_by_min_labels for p in in_process]
    assert all(set(p["scores"]) == set(q.scores) for p, q in zip(over_http, in_process, strict=True))


def _onnx_probabilities(client: TestClient, headers: dict[str, str], model_id: str) -> tuple[Any, Any]:
    """(probabilities of TEXT_INPUTS from onnxruntime, the model's aplserve.decision metadata)."""
    import json
    import zipfile

    import onnxruntime as ort
    from transformers import AutoTokenizer

    response = client.get(f"/v1/models/{model_id}/artifact?format=onnx", headers=headers)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive, TemporaryDirectory() as tmp:
        archive.extractall(tmp)
        config = json.loads(archive.read("config.json"))
        session = ort.InferenceSession(archive.read("model.onnx"), providers=["CPUExecutionProvider"])
        tokenizer = AutoTokenizer.from_pretrained(f"{tmp}/tokenizer", local_files_only=True)
    encoded = tokenizer(
        TEXT_INPUTS,
        padding=True,
        truncation=True,
        max_length=config["preprocessing"]["max_length"],
        return_tensors="np",
    )
    probs = session.run(["probabilities"], {name: encoded[name] for name in config["inputs"]})[0]
    decision = json.loads(session.get_modelmeta().custom_metadata_map["aplserve.decision"])
    assert decision == config["decision_parameters"] and config["decision"] == decision["rule"]
    return probs, decision


def _onnx_labels(probs: Any, decision: dict[str, Any], labels: list[str], options: dict[str, Any]) -> Any:
    """What an ONNX consumer does with the metadata: the rule, its thresholds and min_labels."""
    from apl.decisions import decide_batch

    cut = [options.get("threshold", decision["thresholds"][label]) for label in labels]
    wanted = options.get("min_labels", decision["min_labels"])
    choices = decide_batch(probs, cut, top_k=options.get("top_k"), min_labels=wanted)
    return [[labels[j] for j in c.chosen] for c in choices], [[labels[j] for j in c.added] for c in choices]


@SQLITE_ONLY
@pytest.mark.parametrize("policy", list(POLICIES))
def test_api_apl_inference_and_onnxruntime_return_the_same_labels_under_each_policy(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    by_policy: dict[str, Trained],
    tmp_path: Path,
    policy: str,
) -> None:
    """One decision rule everywhere: HTTP, `apl.inference` on the downloaded artifact, and
    onnxruntime on the ONNX export with the rule's parameters from its metadata."""
    from apl.inference import load

    trained = by_policy[policy]
    model_id = register(settings, trained, "alice")
    model = client.get(f"/v1/models/{model_id}", headers=alice).json()
    assert model["decision"]["policy"] == policy
    assert model["decision"]["min_labels"] == POLICIES[policy].get("min_labels", 0)
    predictor = load(_download(client, alice, model_id, tmp_path), device="cpu")
    assert predictor.min_labels == model["decision"]["min_labels"]
    onnx_probs, decision = _onnx_probabilities(client, alice, model_id)
    assert decision["policy"] == policy and decision["thresholds"] == pytest.approx(model["thresholds"])
    assert decision["temperatures"] == pytest.approx(model["decision"]["temperatures"])
    labels = predictor.labels
    added_somewhere = False
    for options in ({}, {"top_k": 1}, {"min_labels": 0}, {"min_labels": 3, "top_k": 1}, {"threshold": 0.97}):
        body = _predict(client, alice, model_id, inputs=TEXT_INPUTS, **options).json()
        over_http = body["predictions"]
        assert body["min_labels"] == options.get("min_labels", decision["min_labels"])
        in_process = predictor.predict(TEXT_INPUTS, **options)
        onnx_labels, onnx_added = _onnx_labels(onnx_probs, decision, labels, options)
        assert [p["labels"] for p in over_http] == [p.labels for p in in_process] == onnx_labels, options
        added = [p["added_by_min_labels"] for p in over_http]
        assert added == [p.added_by_min_labels for p in in_process] == onnx_added
        added_somewhere = added_somewhere or any(added)
        for prediction, row in zip(over_http, onnx_probs, strict=True):
            np.testing.assert_allclose([prediction["scores"][label] for label in labels], row, atol=1e-5)
    assert added_somewhere  # min_labels took part in the comparison


@pytest.mark.parametrize(
    ("kind", "request_kwargs", "status", "code"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_inputs_answer_problem_json(
    settings: Settings,
    alice: dict[str, str],
    trained: dict[str, Trained],
    kind: str,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    model_id = register(settings, trained[kind], "alice")
    kwargs = dict(request_kwargs)
    headers = alice | kwargs.pop("headers", {})
    with serving_client(settings, **LIMITS) as client:
        response = client.post(f"/v1/models/{model_id}/predict", headers=headers, **kwargs)
        assert_problem(response, status, code)
        engine = app_state(client.app).serving
        assert engine.snapshot()["loads"] == 0, "a bad request must be refused before the model is loaded"


def test_other_owner_and_unknown_models_are_404(
    client: TestClient,
    settings: Settings,
    alice: dict[str, str],
    bob: dict[str, str],
    trained: dict[str, Trained],
) -> None:
    model_id = register(settings, trained["text"], "alice")
    for path in ("", "/artifact", "/artifact?format=onnx"):
        assert_problem(client.get(f"/v1/models/{model_id}{path}", headers=bob), 404, "not_found")
        assert_problem(client.get(f"/v1/models/no-such-model{path}", headers=alice), 404, "not_found")
    assert_problem(_predict(client, bob, model_id, inputs=["x"]), 404, "not_found")
    assert_problem(_predict(client, alice, "no-such-model", inputs=["x"]), 404, "not_found")
    assert client.post(f"/v1/models/{model_id}/predict", json={"inputs": ["x"]}).status_code == 401


@SQLITE_ONLY
def test_missing_artifact_is_503_model_unavailable(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained]
) -> None:
    model_id = register(settings, trained["text"], "alice")
    (settings.data_dir / "artifacts" / f"{model_id}.tar").unlink()
    assert_problem(_predict(client, alice, model_id, inputs=["x"]), 503, "model_unavailable")
    assert_problem(client.get(f"/v1/models/{model_id}/artifact", headers=alice), 503, "model_unavailable")


@SQLITE_ONLY
def test_corrupt_artifact_is_503_and_loads_no_pickle(
    client: TestClient, settings: Settings, alice: dict[str, str], trained: dict[str, Trained]
) -> None:
    model_id = register(settings, trained["text"], "alice")
    path = settings.data_dir / "artifacts" / f"{model_id}.tar"
    path.unlink()  # the hard link: replace the file, not the shared archive
    with tarfile.open(path, "w") as archive:
        payload = b"cos\nsystem\n(S'echo pwned'\ntR."
        info = tarfile.TarInfo("model.pkl")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    assert_problem(_predict(client, alice, model_id, inputs=["x"]), 503, "model_unavailable")


def _concurrent(client: TestClient, headers: dict[str, str], jobs: list[tuple[str, list[str]]]) -> list[Any]:
    def call(job: tuple[str, list[str]]) -> Any:
        model_id, inputs = job
        return client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs}, headers=headers)

    return call_concurrently(call, jobs, timeout=CALLS_TIMEOUT_S)


def _client_inputs(n: int) -> list[list[str]]:
    """Distinct inputs per client (1-3 texts each), so a mixed-up answer cannot pass."""
    words = ["cat", "red", "apple", "dog", "blue", "bread", "horse", "green", "cheese", "the", "very"]
    return [
        [f"{words[i % 11]} {words[(i * 7 + k) % 11]} client {i} item {k}" for k in range(1 + i % 3)]
        for i in range(n)
    ]


@SQLITE_ONLY
def test_32_concurrent_clients_are_batched_and_answered_in_order(
    settings: Settings, alice: dict[str, str], trained: dict[str, Trained], local: Any
) -> None:
    model_id = register(settings, trained["text"], "alice")
    inputs = _client_inputs(32)
    with serving_client(settings, serving_max_wait_ms=50.0, serving_max_batch_size=64) as client:
        assert _predict(client, alice, model_id, inputs=["warm up"]).status_code == 200
        responses = _concurrent(client, alice, [(model_id, batch) for batch in inputs])
        snapshot = app_state(client.app).serving.snapshot()
        metrics = client.get("/metrics").text
    labels = local["text"].labels
    for batch, response in zip(inputs, responses, strict=True):
        assert response.status_code == 200, response.text
        _check_against(response.json()["predictions"], local["text"].predict_proba(batch), labels)
    assert snapshot["requests"] == 33
    assert snapshot["batches"] < 33 and snapshot["max_requests_in_batch"] > 1, snapshot
    assert snapshot["items"] == 1 + sum(len(batch) for batch in inputs)
    # Prometheus: one observation per forward pass; the sums count requests and inputs.
    series = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("aplserve_predict"))
    assert float(series["aplserve_predict_batch_requests_count"]) == snapshot["batches"]
    assert float(series["aplserve_predict_batch_requests_sum"]) == 33
    assert float(series["aplserve_predict_batch_size_sum"]) == snapshot["items"]


@SQLITE_ONLY
def test_batching_off_runs_one_request_at_a_time(
    settings: Settings, alice: dict[str, str], trained: dict[str, Trained], local: Any
) -> None:
    model_id = register(settings, trained["text"], "alice")
    inputs = _client_inputs(8)
    with serving_client(settings, serving_batching=False, serving_instances=1) as client:
        responses = _concurrent(client, alice, [(model_id, batch) for batch in inputs])
        snapshot = app_state(client.app).serving.snapshot()
    for batch, response in zip(inputs, responses, strict=True):
        _check_against(
            response.json()["predictions"], local["text"].predict_proba(batch), local["text"].labels
        )
    assert snapshot["batches"] == 8 and snapshot["max_requests_in_batch"] == 1


def test_two_instances_run_two_forward_passes_at_once(trained: dict[str, Trained], local: Any) -> None:
    """With 2 instances a model serves two batches concurrently: both forward passes must be
    inside the model at the same moment (a barrier only 2 threads can pass), and each request
    still gets its own answer."""
    import asyncio
    import threading

    from api.serving.engine import EngineConfig, ModelRef, ServingEngine, load_predictor

    both_inside = threading.Barrier(2, timeout=30)

    def loader(ref: ModelRef, device: str) -> Any:
        predictor = load_predictor(ref, "cpu")
        forward = predictor.predict_proba

        def together(items: Any, batch_size: int) -> Any:
            both_inside.wait()
            return forward(items, batch_size)

        predictor.predict_proba = together
        return predictor

    ref = ModelRef("m", trained["text"].archive, trained["text"].fields["sha256"], "text")
    engine = ServingEngine(EngineConfig(instances=2, batching=False), loader=loader)

    async def scenario() -> list[Any]:
        return list(
            await asyncio.gather(engine.predict(ref, TEXT_INPUTS[:2]), engine.predict(ref, TEXT_INPUTS[2:]))
        )

    try:
        first, second = asyncio.run(asyncio.wait_for(scenario(), CALLS_TIMEOUT_S))
    finally:
        both_inside.abort()
        engine.close()
    np.testing.assert_allclose(first, local["text"].predict_proba(TEXT_INPUTS[:2]), atol=TOLERANCE)
    np.testing.assert_allclose(second, local["text"].predict_proba(TEXT_INPUTS[2:]), atol=TOLERANCE)


@pytest.mark.parametrize(
    ("instances", "threads", "cuda", "cores", "expected"),
    [
        (None, None, False, 2, (2, 1)),  # CPU: two passes at once, one core each
        (None, None, False, 16, (2, 8)),
        (None, None, False, 1, (1, 1)),
        (None, None, True, 16, (1, None)),  # CUDA: one pass, torch's own thread count
        (1, None, False, 2, (1, 2)),
        (3, 4, False, 2, (3, 4)),  # explicit settings win
    ],
)
def test_instances_and_threads_default_to_the_machine(
    instances: int | None, threads: int | None, cuda: bool, cores: int, expected: tuple[int, int | None]
) -> None:
    from api.serving.engine import EngineConfig, resolve_parallelism

    config = EngineConfig(instances=instances, torch_threads=threads)
    assert resolve_parallelism(config, cuda, cores) == expected


def test_a_text_predictor_answers_from_many_threads_at_once(local: Any) -> None:
    """Fast tokenizers are not safe to call from two threads at once; the predictor serialises
    tokenizing, so concurrent instances get every answer right."""
    predictor = local["text"]
    batches = [TEXT_INPUTS[i % len(TEXT_INPUTS) :] + TEXT_INPUTS[:1] for i in range(16)]
    expected = [predictor.predict_proba(batch) for batch in batches]
    answers = call_concurrently(predictor.predict_proba, batches, timeout=CALLS_TIMEOUT_S)
    for got, want in zip(answers, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=TOLERANCE)


@SQLITE_ONLY
def test_lru_eviction_during_inflight_requests_fails_none(
    settings: Settings, alice: dict[str, str], trained: dict[str, Trained], local: Any
) -> None:
    """One model fits the cache; requests for three models interleave, so each load evicts
    a model that still has requests queued or running. Every request must still succeed."""
    model_ids = [register(settings, trained["text"], "alice") for _ in range(3)]
    inputs = _client_inputs(24)
    jobs = [(model_ids[i % 3], batch) for i, batch in enumerate(inputs)]
    with serving_client(settings, serving_max_models=1, serving_max_wait_ms=20.0) as client:
        responses = _concurrent(client, alice, jobs)
        engine = app_state(client.app).serving
        snapshot = engine.snapshot()
        assert len(engine.loaded()) == 1
    for batch, response in zip(inputs, responses, strict=True):
        assert response.status_code == 200, response.text
        _check_against(
            response.json()["predictions"], local["text"].predict_proba(batch), local["text"].labels
        )
    assert snapshot["loads"] >= 3 and snapshot["evictions"] >= 2, snapshot
    assert snapshot["retiring"] == 0  # every evicted model was stopped once its requests were answered


def test_evicting_a_model_waits_for_its_inflight_request(trained: dict[str, Trained], local: Any) -> None:
    """Deterministic version of the above at the engine level: model A's request is held
    inside its forward pass while model B loads and evicts A; A's request still gets
    its answer, and A's thread stops only afterwards."""
    import asyncio
    import threading

    from api.serving.engine import EngineConfig, ModelRef, ServingEngine, load_predictor

    gate, inside = threading.Event(), threading.Event()

    def loader(ref: ModelRef, device: str) -> Any:
        predictor = load_predictor(ref, "cpu")
        if ref.id == "a":
            forward = predictor.predict_proba

            def held(items: Any, batch_size: int) -> Any:
                inside.set()
                assert gate.wait(30)
                return forward(items, batch_size)

            predictor.predict_proba = held
        return predictor

    archive = trained["text"].archive
    sha = trained["text"].fields["sha256"]
    model_a, model_b = (ModelRef(name, archive, sha, "text") for name in ("a", "b"))
    engine = ServingEngine(EngineConfig(max_models=1), loader=loader)

    async def scenario() -> tuple[Any, Any, dict[str, Any]]:
        pending = asyncio.create_task(engine.predict(model_a, TEXT_INPUTS))
        assert await asyncio.to_thread(inside.wait, 30), "model a's request never reached its forward pass"
        answer_b = await engine.predict(model_b, TEXT_INPUTS[:2])
        during = engine.snapshot()
        gate.set()
        return await pending, answer_b, during

    try:
        answer_a, answer_b, during = asyncio.run(asyncio.wait_for(scenario(), CALLS_TIMEOUT_S))
        after = engine.snapshot()
    finally:
        gate.set()
        engine.close()
    assert during["loaded"] == ["b"] and during["evictions_in_use"] == 1 and during["retiring"] == 1
    assert after["retiring"] == 0
    np.testing.assert_allclose(answer_a, local["text"].predict_proba(TEXT_INPUTS), atol=TOLERANCE)
    np.testing.assert_allclose(answer_b, local["text"].predict_proba(TEXT_INPUTS[:2]), atol=TOLERANCE)


@SQLITE_ONLY
def test_memory_bound_evicts_least_recently_used(
    settings: Settings, alice: dict[str, str], trained: dict[str, Trained]
) -> None:
    text_id = register(settings, trained["text"], "alice")
    image_id = register(settings, trained["image"], "alice")
    image = {"image_base64": b64(sample_images(trained["image"])[0])}
    with serving_client(settings, serving_max_memory_bytes=1) as client:
        engine = app_state(client.app).serving
        assert _predict(client, alice, text_id, inputs=["x"]).status_code == 200
        assert list(engine.loaded()) == [text_id]  # over budget alone: the newest always stays
        assert _predict(client, alice, image_id, inputs=[image]).status_code == 200
        assert list(engine.loaded()) == [image_id]
        assert engine.snapshot()["evictions"] == 1
    with serving_client(settings) as client:
        engine = app_state(client.app).serving
        for model_id, body in ((text_id, "x"), (image_id, image), (text_id, "y")):
            assert _predict(client, alice, model_id, inputs=[body]).status_code == 200
        assert list(engine.loaded()) == [image_id, text_id]  # least recently used first
        assert 0 < engine.memory_bytes() == sum(engine.loaded().values())
