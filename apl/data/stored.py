"""Reading the normalized dataset directory that ingest writes.

Layout (shared contract with `api.ingest`): `samples.jsonl` with one object a line,
`{"text": ..., "labels": [...]}` or `{"image": "images/<path>", "labels": [...]}`,
`labels.json` with the sorted label names, and the image files under `images/`.
A sample may also hold `"unknown": [...]`, label names it leaves unannotated (partial
labels); their cells are NaN in the target matrix, the one representation of an unknown
cell everywhere in `apl` (the losses give a NaN target zero loss and gradient, and
`apl.thresholds.check_scores` leaves NaN cells out of every metric, threshold and fit).
Everything is validated here again because the training process must never trust
a path it did not check: an image reference that escapes `images/` is rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from apl.errors import DatasetError
from apl.formats import IMAGES_DIR, LABELS_FILE, SAMPLES_FILE, UNKNOWN_KEY


@dataclass(frozen=True)
class StoredDataset:
    """A dataset in memory: inputs (texts or image paths) and a dense 0/1 target matrix."""

    modality: Literal["text", "image"]
    labels: list[str]
    #: Texts for a text dataset, absolute image paths for an image dataset.
    inputs: list[str]
    #: float32 array of shape (num_samples, num_labels) with 0/1 entries, NaN where unknown.
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def known(self) -> np.ndarray:
        """Boolean (num_samples, num_labels): True where the cell is annotated (0 or 1)."""
        known: np.ndarray = ~np.isnan(self.targets)
        return known

    @property
    def positive_counts(self) -> list[float]:
        """Known positives per label (what rare-label handling and the evaluation's thirds count)."""
        return [float(v) for v in np.nansum(self.targets, axis=0)]

    def subset(self, indices: np.ndarray) -> StoredDataset:
        return StoredDataset(
            modality=self.modality,
            labels=self.labels,
            inputs=[self.inputs[int(i)] for i in indices],
            targets=self.targets[indices],
        )


def _read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{LABELS_FILE} is missing or not valid JSON") from exc
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DatasetError(f"{LABELS_FILE} must be a JSON list of label names")
    if not labels:
        raise DatasetError("the dataset has no labels")
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{LABELS_FILE} lists a label more than once")
    return list(labels)


def load_stored_dataset(directory: str | Path) -> StoredDataset:
    """Load and validate a normalized dataset directory."""
    root = Path(directory).resolve()
    labels = _read_labels(root / LABELS_FILE)
    index = {name: i for i, name in enumerate(labels)}
    images_root = (root / IMAGES_DIR).resolve()
    inputs: list[str] = []
    rows: list[list[int]] = []
    hidden: list[list[int]] = []
    modality: Literal["text", "image"] | None = None
    try:
        handle = (root / SAMPLES_FILE).open(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{SAMPLES_FILE} is missing") from exc
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{SAMPLES_FILE} line {line_no} is not valid JSON") from exc
            if not isinstance(record, dict):
                raise DatasetError(f"{SAMPLES_FILE} line {line_no} is not a JSON object")
            kind: Literal["text", "image"]
            if isinstance(record.get("text"), str):
                kind, value = "text", record["text"]
            elif isinstance(record.get("image"), str):
                kind = "image"
                image = (root / record["image"]).resolve()
                if not image.is_relative_to(images_root):
                    raise DatasetError(f"{SAMPLES_FILE} line {line_no}: image path leaves images/")
                value = str(image)
            else:
                raise DatasetError(f"{SAMPLES_FILE} line {line_no} has neither 'text' nor 'image'")
            if modality is None:
                modality = kind
            elif modality != kind:
                raise DatasetError("the dataset mixes text and image samples")
            names = record.get("labels", [])
            inputs.append(value)
            rows.append(_label_indices(names, index, line_no, "labels"))
            hidden.append(_label_indices(record.get(UNKNOWN_KEY, []), index, line_no, UNKNOWN_KEY))
    if modality is None:
        raise DatasetError("the dataset has no samples")
    targets = np.zeros((len(rows), len(labels)), dtype=np.float32)
    for i, (row, unknown) in enumerate(zip(rows, hidden, strict=True)):
        if set(row) & set(unknown):
            raise DatasetError(f"sample {i + 1}: a label is both given and unknown")
        targets[i, row] = 1.0
        targets[i, unknown] = np.nan
    return StoredDataset(modality=modality, labels=labels, inputs=inputs, targets=targets)


def _label_indices(names: object, index: dict[str, int], line_no: int, key: str) -> list[int]:
    """Column indices of a sample's label names (its labels or its unknown ones), each checked."""
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise DatasetError(f"{SAMPLES_FILE} line {line_no}: '{key}' must be a list of names")
    missing = [name for name in names if name not in index]
    if missing:
        raise DatasetError(f"{SAMPLES_FILE} line {line_no}: label '{missing[0]}' is not in {LABELS_FILE}")
    return sorted({index[name] for name in names})
