"""Where every file of a deployment lives: the one place that knows the data dir's layout.

    <data_dir>/uploads/                 uploads being received (deleted once ingested)
    <data_dir>/datasets/<dataset id>/   normalized datasets (`apl.formats` layout)
    <data_dir>/artifacts/<model id>.tar model archives; the ONNX export beside them
    <data_dir>/checkpoints/<job id>/    the last epoch checkpoint of a running job
    <data_dir>/predictions/<job id>/<split>-<attempt>.npz
                                        a succeeded job's per-sample predictions on its test
                                        split (`apl.predictions`), read by the sweep leaderboard;
                                        per attempt, so a stale attempt never touches the file
                                        of the one that succeeded
    <data_dir>/label-issues/<model id>.json
                                        the model's validation samples ranked by label quality
                                        (`apl.label_issues`), read by GET .../label-issues

Partial files (`api_partials`, `worker_partials`) are what an interrupted write leaves:
the server and each worker remove their own at start once they are older than
`stale_file_seconds` (core.storage.remove_stale).

The API writes uploads and datasets and reads artifacts and predictions; the worker
reads datasets and writes checkpoints, artifacts and predictions. Both ask this
class, so the two never disagree.
Nobody opens these paths directly: they go through the storage interface (core.objects,
`settings.storage`). With `file://` storage this tree is the data dir itself; with `s3://`
the same relative paths are the object keys under the bucket's prefix (a dataset directory
travels as `datasets/<id>.tar`), and two local trees with this layout hold a process's
scratch files (`<data_dir>/scratch`) and its node-local cache (`<data_dir>/cache`).
A Model row stores its archive's path relative to the data dir, so a deployment can
move its data dir without rewriting rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIX = ".tar"
ONNX_SUFFIX = ".onnx.zip"
CHECKPOINT_FILE = "last.ckpt"
PREDICTIONS_SUFFIX = ".npz"


@dataclass(frozen=True)
class DataFiles:
    root: Path

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def dataset(self, dataset_id: str) -> Path:
        return self.datasets / dataset_id

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def artifact_relative(self, model_id: str) -> str:
        """What a Model row stores as `artifact_path` for a new model."""
        return (PurePosixPath("artifacts") / f"{model_id}{ARCHIVE_SUFFIX}").as_posix()

    def artifact(self, model_id: str) -> Path:
        return self.root / self.artifact_relative(model_id)

    def stored_artifact(self, artifact_path: str) -> Path | None:
        """The archive a row's `artifact_path` names; None when it points outside the data dir."""
        root = self.root.resolve()
        archive = (root / artifact_path).resolve()
        return archive if archive.is_relative_to(root) else None

    @staticmethod
    def onnx_export(archive: Path, model_id: str) -> Path:
        """The cached ONNX export of a model, kept beside its archive."""
        return archive.with_name(f"{model_id}{ONNX_SUFFIX}")

    @staticmethod
    def onnx_relative(artifact_path: str, model_id: str) -> str:
        """The layout path of a model's ONNX export, from its row's `artifact_path`."""
        return PurePosixPath(artifact_path).with_name(f"{model_id}{ONNX_SUFFIX}").as_posix()

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, job_id: str) -> Path:
        return self.checkpoints / job_id / CHECKPOINT_FILE

    @property
    def predictions_root(self) -> Path:
        return self.root / "predictions"

    def predictions(self, job_id: str, split: str, attempt: int) -> Path:
        """A job attempt's predictions on one split ("test"): probabilities, targets, thresholds.

        The attempt that succeeded is the job row's `attempts` once it has ended.
        """
        return self.predictions_root / job_id / f"{split}-{attempt}{PREDICTIONS_SUFFIX}"

    @property
    def label_issues_root(self) -> Path:
        return self.root / "label-issues"

    def label_issues(self, model_id: str) -> Path:
        """A model's suspect-label ranking (JSON), written by the worker before the job succeeds."""
        return self.label_issues_root / f"{model_id}.json"

    # --- partial files a killed process leaves behind (removed at start, core.storage) ---

    def api_partials(self) -> list[Path]:
        """What the API writes and may leave half done: uploads being received, dataset staging
        directories, temporary ONNX exports beside the archives."""
        return [
            *_glob(self.uploads, "*.part"),
            *_glob(self.datasets, ".*.partial-*"),
            *_glob(self.artifacts, f".*{ONNX_SUFFIX}.*.tmp"),
        ]

    def worker_partials(self) -> list[Path]:
        """What a worker writes and may leave half done: artifact archives and their staging
        directories, checkpoint temporaries (apl.atomic names them `.<name>.<hex>.tmp`)."""
        artifacts = [
            path
            for pattern in (".*.tmp", ".*.tmpdir", ".*.old", ".*.staging")
            for path in _glob(self.artifacts, pattern)
            if ONNX_SUFFIX not in path.name
        ]
        return [*artifacts, *_glob(self.checkpoints, f"*/.{CHECKPOINT_FILE}.*.tmp")]


def _glob(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern)) if directory.is_dir() else []
