"""Loading a model artifact and predicting with it, without database or pickle.

The architecture is rebuilt from config.json (timm: `create_model(arch, num_classes)`;
transformers: `AutoConfig` + `AutoModel.from_config` from the saved encoder config),
then the safetensors weights are loaded strictly. The image transform is the same
evaluation transform training used, built from the stored preprocessing config.

Probabilities are calibrated with the artifact's per-label calibrators
(`apl.calibrators`, run as `apl.calibration_layer.CalibrationLayer`, the module the ONNX
graph holds too); artifacts holding temperatures only get `sigmoid(logit / temperature)`,
and those made before calibration the raw sigmoid.
Labels come from `apl.decisions`, the rule the API and the ONNX metadata follow, with
the model's `min_labels` as default.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from apl.artifacts import (
    ENCODER_DIR,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    calibration_of,
    min_labels_of,
    read_config,
    unpack_artifact,
)
from apl.calibration_layer import CalibrationLayer
from apl.calibrators import Calibration, LabelCalibration
from apl.data.images import build_transform, decode_image, open_image
from apl.data.text import TextCollator
from apl.decisions import decide_batch
from apl.errors import ArtifactError
from apl.models import BuiltModel, ImageClassifier, TextClassifier, create_timm

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Prediction:
    labels: list[str]
    scores: dict[str, float]
    #: The labels among `labels` that are there only because of `min_labels`.
    added_by_min_labels: list[str] = field(default_factory=list)


def select_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """A loaded classifier: `predict_proba` for texts or images, plus labels and thresholds.

    Images may be PIL images, encoded bytes (PNG/JPEG/WebP...) or file paths.
    `temperatures` (default all 1) calibrate the probabilities; `min_labels` is the
    default of `predict`.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        modality: str,
        labels: list[str],
        thresholds: dict[str, float],
        preprocessing: dict[str, Any],
        tokenizer: Any | None = None,
        config: dict[str, Any] | None = None,
        device: str = "auto",
        temperatures: Sequence[float] | None = None,
        min_labels: int = 0,
        calibration: Calibration | None = None,
    ) -> None:
        self.device = select_device(device)
        self.module = module.to(self.device).eval()
        if isinstance(self.module, TextClassifier):
            self.module.use_packed_inference()
        self.modality = modality
        self.labels = list(labels)
        self.thresholds = np.array([thresholds[label] for label in self.labels], dtype=np.float64)
        if calibration is None:
            given = np.ones(len(self.labels)) if temperatures is None else np.asarray(temperatures)
            if given.shape != (len(self.labels),) or not (given > 0).all():
                raise ValueError("one positive temperature per label is needed")
            calibration = Calibration(
                "temperature", tuple(LabelCalibration.of_temperature(float(t)) for t in given)
            )
        if len(calibration.labels) != len(self.labels):
            raise ValueError("one calibrator per label is needed")
        self.calibration = calibration
        self.temperatures = calibration.temperatures
        self.calibration_layer = CalibrationLayer(calibration).to(self.device).eval()
        self.min_labels = int(min_labels)
        self.preprocessing = dict(preprocessing)
        self.config = dict(config or {})
        self._collator = (
            TextCollator(tokenizer, int(preprocessing["max_length"])) if modality == "text" else None
        )
        self._transform = build_transform(preprocessing, train=False) if modality == "image" else None
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_model(
        cls,
        model: BuiltModel,
        labels: list[str],
        thresholds: dict[str, float],
        device: str = "auto",
        *,
        temperatures: dict[str, float] | None = None,
        min_labels: int = 0,
        calibration: Calibration | None = None,
    ) -> Predictor:
        """A predictor around an in-memory model (e.g. `TrainResult.model` with its calibrators)."""
        return cls(
            model.module,
            modality=model.modality,
            labels=labels,
            thresholds=thresholds,
            preprocessing=model.preprocessing,
            tokenizer=model.tokenizer,
            device=device,
            temperatures=[temperatures[label] for label in labels] if temperatures else None,
            min_labels=min_labels,
            calibration=calibration,
        )

    @classmethod
    def from_result(cls, result: Any, device: str = "auto") -> Predictor:
        """A predictor for a `TrainResult`: its best weights, temperatures, thresholds and min_labels."""
        return cls.from_model(
            result.model,
            result.labels,
            result.thresholds,
            device,
            temperatures=result.temperatures or None,
            min_labels=result.config.decision.min_labels,
            calibration=result.calibrator,
        )

    def _encode(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self._collator is not None:
            if not all(isinstance(item, str) for item in items):
                raise TypeError("a text model predicts from strings")
            # A fast tokenizer sets its padding/truncation state on every call: two threads
            # tokenizing at once fail with "Already borrowed" (huggingface/tokenizers#537).
            with self._tokenizer_lock:
                return self._collator.encode(list(items))
        assert self._transform is not None
        images = [self._as_image(item) for item in items]
        return {"pixel_values": torch.stack([self._transform(image) for image in images])}

    @staticmethod
    def _as_image(item: Any) -> Image.Image:
        if isinstance(item, Image.Image):
            return item.convert("RGB")
        if isinstance(item, bytes | bytearray):
            return decode_image(bytes(item))
        if isinstance(item, str | Path):
            return open_image(str(item))
        raise TypeError("an image model predicts from PIL images, encoded image bytes or image file paths")

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Calibrated probabilities, shape (len(inputs), num_labels), float32, in input order."""
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                batch = self._encode(inputs[start : start + batch_size])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.module(**batch).float()
                out.append(self.calibration_layer(logits).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def predict(
        self,
        inputs: Sequence[Any],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        min_labels: int | None = None,
    ) -> list[Prediction]:
        """The labels `apl.decisions` chooses (best first) and every label's score, per input.

        `threshold` replaces every per-label threshold; `top_k` and `min_labels` (default:
        the model's) as in the rule.
        """
        probs = self.predict_proba(inputs)
        cut = self.thresholds if threshold is None else np.full(len(self.labels), threshold)
        wanted = self.min_labels if min_labels is None else min_labels
        choices = decide_batch(probs, cut, top_k=top_k, min_labels=wanted)
        return [
            Prediction(
                labels=[self.labels[j] for j in choice.chosen],
                scores={label: float(score) for label, score in zip(self.labels, row, strict=True)},
                added_by_min_labels=[self.labels[j] for j in choice.added],
            )
            for row, choice in zip(probs, choices, strict=True)
        ]


def _build_module(root: Path, config: dict[str, Any]) -> tuple[nn.Module, Any | None]:
    num_labels = int(config["num_labels"])
    if config["family"] == "timm":
        return ImageClassifier(create_timm(str(config["architecture"]), num_labels)), None
    from transformers import AutoTokenizer

    from apl.models.text import encoder_from_config

    try:
        encoder = encoder_from_config(root / ENCODER_DIR)
        tokenizer = AutoTokenizer.from_pretrained(str(root / TOKENIZER_DIR), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError("the artifact's encoder configuration or tokenizer cannot be loaded") from exc
    hidden = int(config["head"]["hidden_size"])
    return TextClassifier(encoder, hidden, num_labels), tokenizer


def _load_directory(root: Path, device: str) -> Predictor:
    config = read_config(root)
    module, tokenizer = _build_module(root, config)
    try:
        weights = load_file(str(root / WEIGHTS_FILE))
        module.load_state_dict(weights, strict=True)
    except Exception as exc:  # malformed file or weights of another architecture
        raise ArtifactError("the artifact's weights do not fit its configuration") from exc
    return Predictor(
        module,
        modality=str(config["modality"]),
        labels=list(config["labels"]),
        thresholds=dict(config["thresholds"]),
        preprocessing=dict(config["preprocessing"]),
        tokenizer=tokenizer,
        config=config,
        device=device,
        min_labels=min_labels_of(config),
        calibration=calibration_of(config),
    )


def load(path: str | Path, *, device: str = "auto") -> Predictor:
    """Load an artifact directory or archive (.tar / .zip) into a Predictor."""
    source = Path(path)
    if source.is_dir():
        return _load_directory(source, device)
    if not source.is_file():
        raise ArtifactError("the model artifact does not exist")
    with tempfile.TemporaryDirectory(prefix="aplserve-artifact-") as tmp:
        root = unpack_artifact(source, Path(tmp) / "artifact")
        return _load_directory(root, device)
