"""A model's predictions on a held-out split, and the file that keeps them (torch-free).

The training loop scores the best weights on the test split once and returns a
`SplitPredictions`; the worker saves it next to the job (`save`), and the sweep
leaderboard reads it back (`load`) to resample the test samples for its paired
bootstrap. The file is a plain `.npz` (no pickle) holding the probabilities, the
0/1 targets, the decision thresholds the model uses, the samples' positions in the
dataset they came from, a small JSON header and, for partially labelled data, the mask
of known cells (`known`; absent in files of fully labelled splits and older files, which
read as all known).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apl.atomic import atomic_file

#: Version of the file layout, stored in its header.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SplitPredictions:
    """Probabilities and targets of one split, with the metrics they give at the model's thresholds."""

    #: Which split: "test" (the only one stored so far).
    split: str
    labels: list[str]
    #: float32 (num_samples, num_labels) sigmoid outputs of the best epoch's weights.
    probs: np.ndarray
    #: uint8 (num_samples, num_labels) 0/1 targets.
    targets: np.ndarray
    #: float64 (num_labels,) per-label thresholds tuned on validation (never on this split).
    thresholds: np.ndarray
    #: int64 (num_samples,) positions of the samples in the dataset they come from.
    indices: np.ndarray
    #: "fraction" (held out of the training dataset) or "dataset" (a separate test dataset).
    source: str
    map: float
    micro_f1: float
    macro_f1: float
    per_class_ap: dict[str, float] = field(default_factory=dict)
    #: bool (num_samples, num_labels): True where the target is annotated; None = all are.
    known: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.known is not None and bool(np.all(self.known)):
            object.__setattr__(self, "known", None)  # fully labelled: stored as before

    @property
    def num_samples(self) -> int:
        return int(self.probs.shape[0])

    def metrics(self) -> dict[str, Any]:
        """What the job and model rows record of the split (JSON-ready)."""
        return {
            "map": self.map,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "num_samples": self.num_samples,
            "source": self.source,
        }

    def save(self, path: Path) -> None:
        """Write the file atomically (temporary file, fsync, rename)."""
        header = {
            "version": FORMAT_VERSION,
            "split": self.split,
            "labels": self.labels,
            "source": self.source,
            "map": self.map,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "per_class_ap": self.per_class_ap,
        }
        arrays: dict[str, np.ndarray] = {
            "probs": np.asarray(self.probs, dtype=np.float32),
            "targets": np.asarray(self.targets > 0.5, dtype=np.uint8),
            "thresholds": np.asarray(self.thresholds, dtype=np.float64),
            "indices": np.asarray(self.indices, dtype=np.int64),
        }
        if self.known is not None:
            arrays["known"] = np.asarray(self.known, dtype=np.uint8)
        with atomic_file(path) as tmp, tmp.open("wb") as out:
            np.savez(out, header=np.array(json.dumps(header)), **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> SplitPredictions:
        """Read a file written by `save`; raises ValueError when it is not one."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if header.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown predictions file version {header.get('version')!r}")
            probs, targets = np.array(data["probs"]), np.array(data["targets"])
            thresholds, indices = np.array(data["thresholds"]), np.array(data["indices"])
            known = np.array(data["known"]).astype(bool) if "known" in data.files else None
        if probs.shape != targets.shape or probs.ndim != 2 or thresholds.shape != (probs.shape[1],):
            raise ValueError("the predictions file holds arrays of mismatched shapes")
        if known is not None and known.shape != probs.shape:
            raise ValueError("the predictions file's known-cell mask has the wrong shape")
        return cls(
            split=str(header["split"]),
            labels=list(header["labels"]),
            probs=probs,
            targets=targets,
            thresholds=thresholds,
            indices=indices,
            source=str(header["source"]),
            map=float(header["map"]),
            micro_f1=float(header["micro_f1"]),
            macro_f1=float(header["macro_f1"]),
            per_class_ap={str(k): float(v) for k, v in header.get("per_class_ap", {}).items()},
            known=known,
        )
