"""The model artifact: a directory (or a .tar / .zip of it) of safetensors + JSON.

Layout:
    config.json          format version, modality, family, architecture, base model,
                         labels, thresholds, fallback labels, preprocessing, metrics,
                         calibration (method and per-label temperatures) and decision
                         (policy, target, min_labels, threshold sources, the rule)
    model.safetensors    the classifier's weights
    encoder/config.json  (text) the transformers encoder configuration
    tokenizer/           (text) the tokenizer, as `save_pretrained` writes it

Artifacts written before calibration existed have no `calibration` or `decision`: they
load with every temperature 1 (raw sigmoid) and min_labels 0, i.e. as they always did.

Nothing is pickled, so loading never executes code. Writing is atomic: a temporary
directory or file is filled, fsynced and renamed into place. Unpacking an archive
accepts only regular files under the names above, with size and count limits.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import torch
from safetensors.torch import save_file

from apl.atomic import atomic_directory, atomic_file, file_sha256
from apl.calibrators import Calibration, LabelCalibration
from apl.decisions import DECISION_RULE
from apl.errors import ArtifactError
from apl.metrics import EpochMetrics
from apl.models import BuiltModel

FORMAT = "aplserve-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
#: The only top-level names an artifact may contain.
ALLOWED_TOP_LEVEL = frozenset({CONFIG_FILE, WEIGHTS_FILE, ENCODER_DIR, TOKENIZER_DIR})
MAX_MEMBERS = 256
MAX_TOTAL_BYTES = 8 * 1024**3

ArchiveFormat = Literal["tar", "zip"]


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    sha256: str
    size_bytes: int


def _versions() -> dict[str, str]:
    import timm
    import transformers

    return {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__}


def build_config(
    model: BuiltModel,
    *,
    labels: list[str],
    thresholds: dict[str, float],
    fallback_labels: list[str],
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """config.json; `calibration` is {"method", "temperatures": {label: T}}, `decision` the policy."""
    if len(labels) != len(set(labels)):
        raise ArtifactError("label names must be unique")
    missing = [label for label in labels if label not in thresholds]
    if missing:
        raise ArtifactError(f"no threshold for label '{missing[0]}'")
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modality": model.modality,
        "family": model.family,
        "architecture": model.architecture,
        "base_model": model.info.name,
        "source": model.info.source,
        "pretrained": model.info.pretrained,
        "num_labels": len(labels),
        "labels": list(labels),
        "thresholds": {label: float(thresholds[label]) for label in labels},
        "fallback_labels": list(fallback_labels),
        "preprocessing": dict(model.preprocessing),
        "metrics": metrics or {},
        "training": training or {},
        "library_versions": _versions(),
    }
    if calibration is not None:
        config["calibration"] = calibration
    if decision is not None:
        config["decision"] = decision
    _check_calibration(config)
    if model.modality == "text":
        config["head"] = {"pooling": "mean", "hidden_size": model.hidden_size}
    return config


def _write_contents(directory: Path, model: BuiltModel, config: dict[str, Any]) -> None:
    module = model.module
    weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    if model.modality == "text":
        encoder = getattr(module, "encoder", None)
        encoder_config = getattr(encoder, "config", None)
        if encoder_config is None or model.tokenizer is None:
            raise ArtifactError("a text model needs its encoder configuration and tokenizer")
        encoder_config.save_pretrained(str(directory / ENCODER_DIR))
        model.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def save_artifact(
    directory: str | Path,
    model: BuiltModel,
    *,
    labels: list[str],
    thresholds: dict[str, float],
    fallback_labels: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact directory atomically (an existing one is replaced whole)."""
    config = build_config(
        model,
        labels=labels,
        thresholds=thresholds,
        fallback_labels=fallback_labels or [],
        metrics=metrics,
        training=training,
        calibration=calibration,
        decision=decision,
    )
    target = Path(directory)
    with atomic_directory(target) as tmp:
        _write_contents(tmp, model, config)
    return target


def _calibration_block(result: Any) -> dict[str, Any]:
    """The artifact's calibration: method, temperatures and, when fitted, every label's map."""
    if result.calibrator is not None:
        block: dict[str, Any] = result.calibrator.as_dict(result.labels)
        return block
    return {"method": result.config.calibration, "temperatures": dict(result.temperatures)}


def _result_fields(result: Any) -> dict[str, Any]:
    """The artifact arguments for a `TrainResult` (typed loosely to avoid importing training)."""
    best: EpochMetrics | None = result.best_metrics
    config = result.config
    finalized = bool(result.temperatures)
    return {
        "calibration": _calibration_block(result) if finalized else None,
        "decision": (
            {
                **config.decision.model_dump(mode="json"),
                "threshold_sources": dict(result.threshold_sources),
                "rule": DECISION_RULE,
            }
            if finalized
            else None
        ),
        "labels": result.labels,
        "thresholds": result.thresholds,
        "fallback_labels": result.fallback_labels,
        "metrics": ({**best.as_metric_point(), "thresholds": best.thresholds} if best else {}),
        "training": {
            "loss": result.config.loss.model_dump(mode="json"),
            "hyperparameters": result.config.hyperparameters.model_dump(mode="json"),
            "epochs_completed": result.epochs_completed,
            "early_stopped": result.early_stopped,
            "precision": result.precision,
            "kind": getattr(result, "kind", "fine_tuned"),
        },
    }


def save_result(result: Any, directory: str | Path) -> Path:
    """Write the artifact of a `apl.training.TrainResult` (its best weights) to `directory`."""
    return save_artifact(directory, result.model, **_result_fields(result))


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise ArtifactError("an artifact directory must not contain symbolic links")
        if path.is_file():
            yield path.relative_to(directory).as_posix(), path


def _archive_format(path: Path) -> ArchiveFormat:
    return "zip" if path.suffix.lower() == ".zip" else "tar"


def pack_artifact(
    directory: str | Path, archive: str | Path, fmt: ArchiveFormat | None = None
) -> ArtifactInfo:
    """Pack an artifact directory into one file (.tar by default, .zip by suffix), atomically.

    Members carry fixed timestamps and permissions, so the same directory always gives
    the same bytes and the same sha256.
    """
    source, target = Path(directory), Path(archive)
    read_config(source)
    fmt = fmt or _archive_format(target)
    with atomic_file(target) as tmp:
        if fmt == "zip":
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for name, path in _files(source):
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        else:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                for name, path in _files(source):
                    member = tarfile.TarInfo(name)
                    member.size = path.stat().st_size
                    member.mode = 0o644
                    member.mtime = 0
                    with path.open("rb") as src:
                        tf.addfile(member, src)
    return ArtifactInfo(path=target, sha256=file_sha256(target), size_bytes=target.stat().st_size)


def publish_result(result: Any, archive: str | Path, fmt: ArchiveFormat | None = None) -> ArtifactInfo:
    """Write the artifact of a TrainResult straight to an archive file (atomic rename at the end)."""
    target = Path(archive)
    staging = target.with_name(f".{target.name}.staging")
    try:
        save_result(result, staging)
        return pack_artifact(staging, target, fmt)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in path.parts)
        or path.parts[0] not in ALLOWED_TOP_LEVEL
        or (len(path.parts) == 1 and path.parts[0] in (ENCODER_DIR, TOKENIZER_DIR))
        or len(path.parts) > 3
    ):
        raise ArtifactError("the archive contains a member that is not part of a model artifact")
    return path


def _copy_limited(src: IO[bytes], dst: Path, budget: int) -> int:
    written = 0
    with dst.open("wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > budget:
                raise ArtifactError("the archive is larger than an artifact may be")
            out.write(chunk)
    return written


def _extract(archive: Path, target: Path, max_total_bytes: int, max_members: int) -> None:
    budget = max_total_bytes
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise ArtifactError("the archive has too many members")
            for info in infos:
                mode = info.external_attr >> 16
                if info.is_dir():
                    continue
                if mode and not stat.S_ISREG(mode):
                    raise ArtifactError("the archive contains a link or special file")
                name = _safe_name(info.filename)
                if info.file_size > budget:
                    raise ArtifactError("the archive is larger than an artifact may be")
                dst = target.joinpath(*name.parts)
                dst.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    budget -= _copy_limited(src, dst, budget)
        return
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError("the file is neither a tar nor a zip archive") from exc
    with tf:
        count = 0
        for member in tf:
            count += 1
            if count > max_members:
                raise ArtifactError("the archive has too many members")
            if member.isdir():
                continue
            if not member.isfile():
                raise ArtifactError("the archive contains a link or special file")
            name = _safe_name(member.name)
            if member.size > budget:
                raise ArtifactError("the archive is larger than an artifact may be")
            dst = target.joinpath(*name.parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            handle = tf.extractfile(member)
            if handle is None:
                raise ArtifactError("the archive contains an unreadable member")
            with handle:
                budget -= _copy_limited(handle, dst, budget)


def unpack_artifact(
    archive: str | Path,
    directory: str | Path,
    *,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_members: int = MAX_MEMBERS,
) -> Path:
    """Extract an artifact archive safely and atomically into `directory`, then validate it.

    Only regular files named like artifact members are accepted (no absolute paths,
    no `..`, no links or devices), within a member count and a total size checked on
    the bytes actually read, not on the sizes the archive claims.
    """
    target = Path(directory)
    with atomic_directory(target) as tmp:
        _extract(Path(archive), tmp, max_total_bytes, max_members)
        read_config(tmp)
    return target


def _check_calibration(config: dict[str, Any]) -> None:
    """Temperatures, when present, are one positive finite number per label; min_labels an int >= 0."""
    calibration = config.get("calibration")
    if calibration is not None:
        temperatures = calibration.get("temperatures") if isinstance(calibration, dict) else None
        if not isinstance(temperatures, dict) or set(temperatures) != set(config["labels"]):
            raise ArtifactError("the artifact's temperatures do not match its labels")
        if not all(isinstance(t, int | float) and math.isfinite(t) and t > 0 for t in temperatures.values()):
            raise ArtifactError("the artifact's temperatures must be positive finite numbers")
        _check_per_label(calibration.get("per_label"), config["labels"])
    decision = config.get("decision")
    if decision is not None:
        min_labels = decision.get("min_labels", 0) if isinstance(decision, dict) else None
        if not isinstance(min_labels, int) or isinstance(min_labels, bool) or min_labels < 0:
            raise ArtifactError("the artifact's decision has no valid min_labels")


def _check_per_label(per_label: Any, labels: list[str]) -> None:
    """Per-label calibrators, when present: one per label, finite numbers, increasing knots."""
    if per_label is None:
        return
    if not isinstance(per_label, dict) or set(per_label) != set(labels):
        raise ArtifactError("the artifact's per-label calibrators do not match its labels")
    for entry in per_label.values():
        try:
            calibrator = LabelCalibration.from_dict(entry)
            numbers = [calibrator.scale, calibrator.bias]
            if calibrator.knots is not None:
                xs, ys = calibrator.knots
                numbers += [*xs, *ys]
                if not xs or len(xs) != len(ys) or any(b <= a for a, b in itertools.pairwise(xs)):
                    raise ValueError("knots")
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ArtifactError("the artifact has a malformed per-label calibrator") from exc
        if calibrator.method not in ("none", "temperature", "platt", "isotonic") or not all(
            math.isfinite(v) for v in numbers
        ):
            raise ArtifactError("the artifact has a malformed per-label calibrator")


def calibration_of(config: dict[str, Any]) -> Calibration:
    """Every label's calibrator (`apl.calibrators`); temperatures alone for older artifacts."""
    return Calibration.from_config(config.get("calibration"), list(config["labels"]))


def temperatures_of(config: dict[str, Any]) -> list[float]:
    """The temperature of each label in `labels` order; 1 for artifacts made before calibration."""
    calibration = config.get("calibration") or {}
    temperatures = calibration.get("temperatures") or {}
    return [float(temperatures.get(label, 1.0)) for label in config["labels"]]


def min_labels_of(config: dict[str, Any]) -> int:
    """The model's default min_labels; 0 for artifacts made before decision policies."""
    return int((config.get("decision") or {}).get("min_labels", 0))


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check an artifact's config.json (format, version, labels, thresholds)."""
    root = Path(directory)
    try:
        config = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError("the artifact has no readable config.json") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError("the file is not an aplserve model artifact")
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"unsupported artifact format version {config.get('format_version')!r}")
    labels = config.get("labels")
    thresholds = config.get("thresholds")
    if (
        not isinstance(labels, list)
        or not isinstance(thresholds, dict)
        or config.get("num_labels") != len(labels)
        or set(thresholds) != set(labels)
    ):
        raise ArtifactError("the artifact's labels and thresholds do not agree")
    if config.get("modality") not in ("text", "image") or config.get("family") not in (
        "timm",
        "transformers",
    ):
        raise ArtifactError("the artifact names an unknown modality or model family")
    _check_calibration(config)
    if not (root / WEIGHTS_FILE).is_file():
        raise ArtifactError("the artifact has no model.safetensors")
    return config


def read_config_from_archive(archive: str | Path) -> dict[str, Any]:
    """config.json of a packed artifact, without extracting the weights."""
    path = Path(archive)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                data = zf.read(CONFIG_FILE)
        else:
            with tarfile.open(path, "r:*") as tf:
                member = tf.getmember(CONFIG_FILE)
                handle = tf.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise ArtifactError("the artifact has no readable config.json")
                data = handle.read(1 << 24)
        config = json.load(io.BytesIO(data))
    except (KeyError, OSError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise ArtifactError("the artifact has no readable config.json") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError("the file is not an aplserve model artifact")
    return config
