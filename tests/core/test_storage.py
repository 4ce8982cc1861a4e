"""A full disk recognised in every shape it takes, and the partial files each process cleans at start."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from core.files import DataFiles
from core.storage import is_storage_full, remove_stale
from worker.runner import classify


def _chained() -> RuntimeError:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not write the checkpoint") from inner
    except RuntimeError as outer:
        return outer


class SafetensorError(Exception):
    """What safetensors raises: its Rust I/O error as text only."""


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        _chained(),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
        OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full")),
    ],
)
def test_a_full_disk_is_recognised_however_it_is_raised(error: BaseException) -> None:
    assert is_storage_full(error)
    failure = classify(error)
    assert failure.code == "storage_full" and "disk space" in failure.message


@pytest.mark.parametrize(
    "error", [OSError(errno.EACCES, "Permission denied"), RuntimeError("boom"), ValueError("No space here")]
)
def test_other_errors_are_not_a_full_disk(error: BaseException) -> None:
    assert not is_storage_full(error)


def _old(path: Path, seconds: float = 7200) -> Path:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def test_each_process_removes_only_its_own_stale_partials(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    for directory in (files.uploads, files.datasets, files.artifacts, files.checkpoints / "job-1"):
        directory.mkdir(parents=True)
    upload = files.uploads / "upload-abc.part"
    upload.write_bytes(b"x")
    _old(upload)
    staging = files.datasets / ".d1.partial-1234"
    (staging / "images").mkdir(parents=True)
    _old(staging / "images")
    _old(staging)
    onnx_tmp = files.artifacts / ".m1.onnx.zip.0f0f.tmp"
    archive_tmp = files.artifacts / ".m1.tar.0f0f.tmp"
    checkpoint_tmp = files.checkpoints / "job-1" / ".last.ckpt.0f0f.tmp"
    kept = [files.artifacts / "m2.tar", files.checkpoints / "job-1" / "last.ckpt", files.datasets / "d2"]
    for path in (onnx_tmp, archive_tmp, checkpoint_tmp, *kept[:2]):
        path.write_bytes(b"x" * 10)
        _old(path)
    kept[2].mkdir()
    assert set(files.api_partials()) == {upload, staging, onnx_tmp}
    assert set(files.worker_partials()) == {archive_tmp, checkpoint_tmp}
    removed = remove_stale([*files.api_partials(), *files.worker_partials()], grace_seconds=3600)
    assert {item.path for item in removed} == {upload, staging, onnx_tmp, archive_tmp, checkpoint_tmp}
    assert all(path.exists() for path in kept) and not staging.exists()


def test_partials_still_being_written_are_kept(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    files.datasets.mkdir(parents=True)
    staging = files.datasets / ".d1.partial-1234"
    staging.mkdir()
    _old(staging)
    (staging / "samples.jsonl").write_bytes(b"{}\n")  # a write a moment ago: the tree is fresh
    old = files.datasets / ".d2.partial-5678"
    old.mkdir()
    _old(old)
    removed = remove_stale(files.api_partials(), grace_seconds=600)
    assert [item.path for item in removed] == [old]
    assert staging.exists() and not old.exists()
    assert remove_stale(files.api_partials(), grace_seconds=0)[0].path == staging
