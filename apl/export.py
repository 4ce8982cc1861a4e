"""ONNX export of a model artifact: one self-contained graph from model inputs to probabilities.

Every label's calibrator is part of the graph (`apl.calibration_layer.CalibrationLayer`,
the module `apl.inference` runs too: `sigmoid(scale * logit + bias)`, or the isotonic
piecewise-linear map), so a consumer needs no knowledge of the head or the calibration
to get the same probabilities as `apl.inference` and the API. Text models take the tokenizer's outputs
(`input_ids`, `attention_mask`, and `token_type_ids` where the tokenizer makes them)
with dynamic batch and sequence axes; image models take normalised `pixel_values`
of shape (batch, 3, image_size, image_size). The label map, the thresholds, the
temperatures, the per-label calibrators (`aplserve.calibration`: method, scale, bias,
knots and why), min_labels and the decision rule (`apl.decisions.DECISION_RULE`) travel
twice: in the ONNX `metadata_props` (so a bare model.onnx is still usable) and in the
config.json beside it, together with the preprocessing and, for text, the tokenizer
files.

The TorchScript exporter (`dynamo=False`) is used on purpose: it needs only `onnx`,
and the graph of these encoders is static apart from the batch and sequence sizes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apl.artifacts import (
    TOKENIZER_DIR,
    calibration_of,
    min_labels_of,
    read_config,
    temperatures_of,
    unpack_artifact,
)
from apl.atomic import atomic_file
from apl.decisions import DECISION_RULE
from apl.errors import ArtifactError
from apl.models.text import TextClassifier

ONNX_FORMAT = "aplserve-onnx"
ONNX_FORMAT_VERSION = 1
ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.json"
OUTPUT_NAME = "probabilities"
DEFAULT_OPSET = 17
#: Keys of `metadata_props` in model.onnx (values are JSON strings).
METADATA_KEYS = (
    "aplserve.labels",
    "aplserve.thresholds",
    "aplserve.modality",
    "aplserve.inputs",
    "aplserve.temperatures",
    "aplserve.decision",
    "aplserve.calibration",
)


class _Probabilities(nn.Module):
    """The classifier with its calibration and sigmoid, taking tensors in `input_names` order."""

    def __init__(self, module: nn.Module, input_names: list[str], calibrate: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.input_names = list(input_names)
        self.calibrate = calibrate

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.module(**dict(zip(self.input_names, tensors, strict=True)))
        probabilities: torch.Tensor = self.calibrate(logits.float())
        return probabilities


def _text_inputs(root: Path, config: dict[str, Any]) -> tuple[list[str], dict[str, torch.Tensor]]:
    from transformers import AutoTokenizer

    from apl.data.text import TextCollator

    tokenizer = AutoTokenizer.from_pretrained(str(root / TOKENIZER_DIR), local_files_only=True)
    max_length = int(config["preprocessing"]["max_length"])
    example = TextCollator(tokenizer, max_length).encode(["an example input", "a second, longer input"])
    names = [name for name in tokenizer.model_input_names if name in example]
    return names, {name: example[name] for name in names}


def _image_inputs(config: dict[str, Any]) -> tuple[list[str], dict[str, torch.Tensor]]:
    size = int(config["preprocessing"]["image_size"])
    return ["pixel_values"], {"pixel_values": torch.zeros(2, 3, size, size)}


def _export_graph(
    module: nn.Module,
    names: list[str],
    example: dict[str, torch.Tensor],
    target: Path,
    opset: int,
    calibrate: nn.Module,
) -> None:
    wrapper = _Probabilities(module, names, calibrate).eval()
    dynamic_axes: dict[str, dict[int, str]] = {
        name: ({0: "batch", 1: "sequence"} if example[name].dim() == 2 else {0: "batch"}) for name in names
    }
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The legacy exporter warns that it is deprecated and traces with TracerWarnings.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(example[name] for name in names),
            str(target),
            dynamo=False,
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def decision_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """The decision rule with everything it needs: thresholds, temperatures, min_labels, policy."""
    labels = list(config["labels"])
    decision = config.get("decision") or {}
    return {
        "rule": DECISION_RULE,
        "thresholds": {label: float(config["thresholds"][label]) for label in labels},
        "temperatures": dict(zip(labels, temperatures_of(config), strict=True)),
        "min_labels": min_labels_of(config),
        "policy": decision.get("policy", "max_f1"),
        "target": decision.get("target"),
        "calibration": (config.get("calibration") or {}).get("method", "none"),
    }


def calibration_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """The requested method and every label's calibrator (method, scale, bias, knots), as in the graph."""
    labels = list(config["labels"])
    calibration = calibration_of(config)
    return {
        "method": calibration.requested,
        "per_label": dict(zip(labels, (c.as_dict() for c in calibration.labels), strict=True)),
        "threshold_sources": (config.get("decision") or {}).get("threshold_sources", {}),
    }


def _onnx_config(config: dict[str, Any], names: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    keep = ("modality", "family", "architecture", "base_model", "labels", "thresholds", "fallback_labels")
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        **{key: config.get(key) for key in keep},
        "preprocessing": config.get("preprocessing", {}),
        "inputs": names,
        "output": OUTPUT_NAME,
        "output_is": "calibrated probabilities, one column per label in `labels` order (each label's "
        "calibrator, `calibration.per_label`, is inside the graph)",
        "calibration": calibration_metadata(config),
        "decision": DECISION_RULE,
        "decision_parameters": decision_metadata(config),
        **extra,
    }


def export_directory(
    root: Path, out_dir: Path, *, opset: int = DEFAULT_OPSET, extra: dict[str, Any] | None = None
) -> list[str]:
    """Write model.onnx, config.json (and tokenizer/) for the artifact directory `root`.

    Returns the graph's input names.
    """
    from apl.inference import load

    config = read_config(root)
    predictor = load(root, device="cpu")
    if isinstance(predictor.module, TextClassifier):
        predictor.module.use_packed_inference(False)  # the graph keeps the plain padded forward
    if config["modality"] == "text":
        names, example = _text_inputs(root, config)
    else:
        names, example = _image_inputs(config)
    model_path = out_dir / ONNX_FILE
    try:
        _export_graph(predictor.module, names, example, model_path, opset, predictor.calibration_layer)
    except Exception as exc:  # an architecture the tracer cannot express
        raise ArtifactError("this model cannot be exported to ONNX") from exc
    labels = list(config["labels"])
    _add_metadata(
        model_path,
        {
            "aplserve.labels": json.dumps(labels),
            "aplserve.thresholds": json.dumps({label: config["thresholds"][label] for label in labels}),
            "aplserve.modality": json.dumps(config["modality"]),
            "aplserve.inputs": json.dumps(names),
            "aplserve.temperatures": json.dumps(dict(zip(labels, temperatures_of(config), strict=True))),
            "aplserve.decision": json.dumps(decision_metadata(config)),
            "aplserve.calibration": json.dumps(calibration_metadata(config)),
        },
    )
    onnx_config = _onnx_config(config, names, extra or {})
    (out_dir / CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2, sort_keys=True), encoding="utf-8")
    if config["modality"] == "text":
        shutil.copytree(root / TOKENIZER_DIR, out_dir / TOKENIZER_DIR)
    return names


def export_onnx_archive(
    artifact: str | Path,
    target: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export an artifact (directory or .tar/.zip) to a zip of model.onnx + config.json (+ tokenizer/).

    The zip is written atomically, with fixed timestamps.
    """
    source, out = Path(artifact), Path(target)
    with tempfile.TemporaryDirectory(prefix="aplserve-onnx-") as tmp:
        work = Path(tmp)
        root = source if source.is_dir() else unpack_artifact(source, work / "artifact")
        staged = work / "onnx"
        staged.mkdir()
        export_directory(root, staged, opset=opset, extra=extra)
        with atomic_file(out) as tmp_zip, zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(staged.rglob("*")):
                if path.is_file():
                    name = path.relative_to(staged).as_posix()
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    return out
