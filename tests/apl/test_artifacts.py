"""Model artifacts: atomic writing, packing, safe unpacking, and faithful reloading."""

from __future__ import annotations

import dataclasses
import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apl.artifacts import (
    FORMAT_VERSION,
    pack_artifact,
    publish_result,
    read_config,
    read_config_from_archive,
    save_result,
    unpack_artifact,
)
from apl.atomic import file_sha256
from apl.calibrators import Calibration, LabelCalibration
from apl.data import build_transform, load_stored_dataset
from apl.errors import ArtifactError, DatasetError
from apl.inference import Predictor, load
from apl.spec import Hyperparameters
from apl.training import TrainConfig, TrainResult, train
from tests.apl.conftest import TINY_IMAGE_MODEL

TEXTS = ["the cat is red", "bread with cheese", "a dog and an apple", "nothing here", "blue horse"]


@pytest.fixture(scope="module")
def image_result(image_dataset: Path) -> TrainResult:
    """A tiny trained model carrying one calibrator of each kind (its few validation samples
    would calibrate nothing), so that every check below that scores are calibrated bites."""
    hp = Hyperparameters(epochs=2, batch_size=8, learning_rate=3e-3, image_size=32)
    result = train(TrainConfig(image_dataset, TINY_IMAGE_MODEL, hyperparameters=hp, device="cpu"))
    return with_calibrators(result)


def with_calibrators(result: TrainResult) -> TrainResult:
    """`result` with a Platt, an isotonic and a temperature calibrator on its three labels."""
    calibration = Calibration(
        "auto",
        (
            LabelCalibration("platt", scale=0.7, bias=-1.2),
            LabelCalibration("isotonic", knots=((-0.5, 0.0, 0.4), (0.1, 0.3, 0.8))),
            LabelCalibration.of_temperature(2.0),
        ),
    )
    temperatures = dict(zip(result.labels, calibration.temperatures.tolist(), strict=True))
    return dataclasses.replace(result, calibrator=calibration, temperatures=temperatures)


@pytest.fixture(scope="module")
def text_result(text_dataset: Path, tiny_bert: str) -> TrainResult:
    hp = Hyperparameters(epochs=1, batch_size=8, learning_rate=1e-2, max_length=24)
    return train(TrainConfig(text_dataset, tiny_bert, hyperparameters=hp, device="cpu"))


def _images(dataset: Path, count: int = 6) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in load_stored_dataset(dataset).inputs[:count]]


@pytest.mark.parametrize("suffix", [".tar", ".zip"])
def test_image_artifact_round_trip_predicts_like_the_trained_model(
    image_result: TrainResult, image_dataset: Path, tmp_path: Path, suffix: str
) -> None:
    info = publish_result(image_result, tmp_path / f"model{suffix}")
    assert info.sha256 == file_sha256(info.path) and info.size_bytes == info.path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"model{suffix}"]  # no staging left
    images = _images(image_dataset)
    in_memory = Predictor.from_result(image_result, "cpu")
    loaded = load(info.path, device="cpu")
    expected = in_memory.predict_proba(images)
    got = loaded.predict_proba(images, batch_size=4)
    assert got.shape == (6, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert loaded.labels == image_result.labels
    np.testing.assert_allclose(loaded.thresholds, [image_result.thresholds[x] for x in loaded.labels])
    # Also by hand: the eval transform and the module, no Predictor involved.
    from apl.data import build_transform

    transform = build_transform(image_result.model.preprocessing, train=False)
    with torch.inference_mode():
        logits = image_result.model.module.eval()(torch.stack([transform(im) for im in images]))
    assert image_result.calibrator is not None and loaded.labels == image_result.labels
    # Every label's calibrator as `apl.calibrators` applies it in NumPy (the layer itself is
    # checked against it on non-trivial calibrators in tests/apl/test_calibrators.py).
    by_hand = image_result.calibrator.apply(logits.numpy())
    np.testing.assert_allclose(got, by_hand, atol=1e-6)
    # File paths and encoded bytes work as inputs too.
    paths = load_stored_dataset(image_dataset).inputs[:2]
    np.testing.assert_allclose(loaded.predict_proba(paths), got[:2], atol=1e-6)
    encoded = [Path(p).read_bytes() for p in paths]
    np.testing.assert_allclose(loaded.predict_proba(encoded), got[:2], atol=1e-6)
    with pytest.raises(DatasetError):
        loaded.predict_proba([b"not an image"])


def test_text_artifact_round_trip_rebuilds_encoder_and_tokenizer(
    text_result: TrainResult, tmp_path: Path
) -> None:
    directory = save_result(text_result, tmp_path / "artifact")
    names = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert {
        "config.json",
        "model.safetensors",
        "encoder/config.json",
        "tokenizer/tokenizer_config.json",
    } <= names
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names)
    config = read_config(directory)
    assert config["format_version"] == FORMAT_VERSION
    assert config["modality"] == "text" and config["family"] == "transformers"
    assert config["architecture"] == "bert" and config["head"]["hidden_size"] == 32
    assert config["labels"] == ["animal", "color", "food"]
    assert config["preprocessing"] == {"max_length": 24}
    assert set(config["thresholds"]) == set(config["labels"])
    assert config["metrics"]["map"] == text_result.best_metrics.map  # type: ignore[union-attr]
    in_memory = Predictor.from_result(text_result, "cpu")
    for source in (directory, pack_artifact(directory, tmp_path / "text.tar").path):
        loaded = load(source, device="cpu")
        np.testing.assert_allclose(loaded.predict_proba(TEXTS), in_memory.predict_proba(TEXTS), atol=1e-6)
    assert load(directory).predict_proba([]).shape == (0, 3)


def test_predict_applies_thresholds_and_top_k(text_result: TrainResult, tmp_path: Path) -> None:
    predictor = load(save_result(text_result, tmp_path / "a"), device="cpu")
    probs = predictor.predict_proba(TEXTS)
    predictions = predictor.predict(TEXTS)
    for row, prediction in zip(probs, predictions, strict=True):
        assert set(prediction.scores) == set(predictor.labels)
        expected = {name for j, name in enumerate(predictor.labels) if row[j] >= predictor.thresholds[j]}
        assert set(prediction.labels) == expected
        scores = [prediction.scores[name] for name in prediction.labels]
        assert scores == sorted(scores, reverse=True)
    everything = predictor.predict(TEXTS, threshold=0.0, top_k=2)
    # top_k limits the labels, never the scores: every label keeps its score (the contract).
    assert all(len(p.labels) == 2 and len(p.scores) == len(predictor.labels) for p in everything)
    assert all(p.labels == [] for p in predictor.predict(TEXTS, threshold=1.01))


def test_packing_is_reproducible_and_config_readable_from_archive(
    image_result: TrainResult, tmp_path: Path
) -> None:
    directory = save_result(image_result, tmp_path / "artifact")
    first = pack_artifact(directory, tmp_path / "one.tar")
    second = pack_artifact(directory, tmp_path / "two.tar")
    assert first.sha256 == second.sha256
    config = read_config_from_archive(first.path)
    assert config["architecture"] == "resnet10t" and config["preprocessing"]["image_size"] == 32
    assert read_config_from_archive(pack_artifact(directory, tmp_path / "x.zip").path) == config


def test_saving_replaces_an_existing_artifact_whole(image_result: TrainResult, tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_result(image_result, target)
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    "members",
    [
        [_file("../evil.json")],
        [_file("/etc/evil.json")],
        [_file("tokenizer/../../evil.json")],
        [_file("unexpected.py")],
        [_link("config.json", "/etc/passwd")],
        [_link("model.safetensors", "config.json", tarfile.LNKTYPE)],
        [_file("config.json"), _file("tokenizer/" + "x" * 3 + "/deep/file")],
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "unknown-name", "symlink", "hardlink", "too-deep"],
)
def test_unsafe_tar_archives_are_rejected_before_anything_lands(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    archive = _tar_with(tmp_path / "bad.tar", members)
    with pytest.raises(ArtifactError):
        unpack_artifact(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "evil.json").exists()


def test_archive_limits_use_the_bytes_actually_read(image_result: TrainResult, tmp_path: Path) -> None:
    archive = publish_result(image_result, tmp_path / "ok.tar").path
    with pytest.raises(ArtifactError, match="larger"):
        unpack_artifact(archive, tmp_path / "out", max_total_bytes=1000)
    with pytest.raises(ArtifactError, match="too many"):
        unpack_artifact(archive, tmp_path / "out", max_members=1)
    assert not (tmp_path / "out").exists()
    assert read_config(unpack_artifact(archive, tmp_path / "out"))["num_labels"] == 3


def test_unsafe_zip_archives_are_rejected(tmp_path: Path) -> None:
    traversal = tmp_path / "dotdot.zip"
    with zipfile.ZipFile(traversal, "w") as zf:
        zf.writestr("../config.json", "{}")
    symlink = tmp_path / "link.zip"
    with zipfile.ZipFile(symlink, "w") as zf:
        info = zipfile.ZipInfo("config.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    for archive in (traversal, symlink):
        with pytest.raises(ArtifactError):
            unpack_artifact(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_foreign_or_future_artifacts_are_refused(image_result: TrainResult, tmp_path: Path) -> None:
    directory = save_result(image_result, tmp_path / "artifact")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactError, match="version"):
        load(directory)
    (directory / "config.json").write_text(json.dumps(config | {"num_labels": 7}))
    with pytest.raises(ArtifactError):
        load(directory)
    (tmp_path / "junk.tar").write_bytes(b"junk" * 100)
    with pytest.raises(ArtifactError):
        load(tmp_path / "junk.tar")
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "missing.tar")


DATA = Path(__file__).parent / "data"


def _old_inputs() -> list[Image.Image]:
    """The images `pre_calibration_expected.json` was recorded on."""
    rng = np.random.default_rng(16)
    return [Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)) for _ in range(5)]


def test_an_artifact_made_before_calibration_loads_and_predicts_as_before(tmp_path: Path) -> None:
    """tests/apl/data/pre_calibration_artifact.tar was packed by the code before temperatures and
    decision policies existed (commit 4b5d5cf: timm:test_efficientnet, 16 px, one epoch), and
    pre_calibration_expected.json holds what that code's `load(...).predict` answered."""
    archive = DATA / "pre_calibration_artifact.tar"
    expected = json.loads((DATA / "pre_calibration_expected.json").read_text())
    config = read_config_from_archive(archive)
    assert "calibration" not in config and "decision" not in config
    predictor = load(archive, device="cpu")
    assert predictor.temperatures.tolist() == [1.0] * 3 and predictor.min_labels == 0
    np.testing.assert_allclose(predictor.thresholds, expected["thresholds"])
    np.testing.assert_allclose(predictor.predict_proba(_old_inputs()), expected["probabilities"], atol=1e-6)
    assert [p.labels for p in predictor.predict(_old_inputs())] == expected["labels"]
    assert all(p.added_by_min_labels == [] for p in predictor.predict(_old_inputs()))
    # Its ONNX export is the raw sigmoid too, and says so in its metadata.
    import onnxruntime as ort

    from apl.export import export_onnx_archive

    with zipfile.ZipFile(export_onnx_archive(archive, tmp_path / "old.onnx.zip")) as exported:
        session = ort.InferenceSession(exported.read("model.onnx"), providers=["CPUExecutionProvider"])
    decision = json.loads(session.get_modelmeta().custom_metadata_map["aplserve.decision"])
    assert decision["min_labels"] == 0 and set(decision["temperatures"].values()) == {1.0}
    assert decision["calibration"] == "none"


def test_a_config_without_the_new_keys_loads_with_raw_scores(
    image_result: TrainResult, tmp_path: Path
) -> None:
    directory = save_result(image_result, tmp_path / "artifact")
    config = json.loads((directory / "config.json").read_text())
    assert config["calibration"]["method"] == "auto"
    assert config["calibration"]["temperatures"] == image_result.temperatures
    assert [config["calibration"]["per_label"][x]["method"] for x in image_result.labels] == [
        "platt",
        "isotonic",
        "temperature",
    ]
    assert config["decision"]["policy"] == "max_f1" and config["decision"]["min_labels"] == 0
    images = _images(image_result.config.dataset_dir)
    calibrated = load(directory, device="cpu").predict_proba(images)
    stripped = {k: v for k, v in config.items() if k not in ("calibration", "decision")}
    (directory / "config.json").write_text(json.dumps(stripped))
    raw = load(directory, device="cpu")
    transform = build_transform(image_result.model.preprocessing, train=False)
    with torch.inference_mode():
        logits = image_result.model.module.eval()(torch.stack([transform(im) for im in images]))
    np.testing.assert_allclose(raw.predict_proba(images), torch.sigmoid(logits).numpy(), atol=1e-6)
    assert not np.allclose(raw.predict_proba(images), calibrated, atol=1e-4)


@pytest.mark.parametrize(
    "calibration",
    [{"method": "temperature"}, {"temperatures": {"blue": 1.0}}, {"temperatures": "x"}, "nope"],
)
def test_malformed_temperatures_are_refused(
    image_result: TrainResult, tmp_path: Path, calibration: object
) -> None:
    directory = save_result(image_result, tmp_path / "artifact")
    config = json.loads((directory / "config.json").read_text())
    bad = [calibration]
    if isinstance(calibration, dict) and "temperatures" not in calibration:
        bad.append({"temperatures": dict.fromkeys(config["labels"], -1.0)})
    for value in bad:
        (directory / "config.json").write_text(json.dumps(config | {"calibration": value}))
        with pytest.raises(ArtifactError, match="temperatures"):
            load(directory)


def test_onnx_export_holds_every_calibrator_and_says_so_in_its_metadata(
    image_result: TrainResult, tmp_path: Path
) -> None:
    """One calibration everywhere: `apl.inference` and onnxruntime give the same probabilities
    for a Platt, an isotonic and a temperature label, and the metadata names each calibrator."""
    import onnxruntime as ort

    from apl.export import export_onnx_archive

    directory = save_result(image_result, tmp_path / "artifact")
    images = _images(image_result.config.dataset_dir)
    predictor = load(directory, device="cpu")
    expected = predictor.predict_proba(images)
    with zipfile.ZipFile(export_onnx_archive(directory, tmp_path / "model.onnx.zip")) as exported:
        session = ort.InferenceSession(exported.read("model.onnx"), providers=["CPUExecutionProvider"])
        config = json.loads(exported.read("config.json"))
    pixels = np.stack([predictor._transform(image).numpy() for image in images])  # type: ignore[misc]
    (got,) = session.run(["probabilities"], {"pixel_values": pixels})
    np.testing.assert_allclose(got, expected, atol=1e-5)
    metadata = json.loads(session.get_modelmeta().custom_metadata_map["aplserve.calibration"])
    assert metadata == config["calibration"]
    assert metadata["method"] == "auto"
    methods = [metadata["per_label"][label]["method"] for label in image_result.labels]
    assert methods == ["platt", "isotonic", "temperature"]
    assert metadata["per_label"][image_result.labels[1]]["knots"]["logits"] == [-0.5, 0.0, 0.4]
    assert metadata["threshold_sources"] == image_result.threshold_sources
