"""Crash-safe file and directory publication: write a temporary, fsync, rename.

A reader (the API, a resumed worker) must only ever see a complete checkpoint or
artifact, never a half-written one, even when the process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory entry table (so a rename inside it is durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        fsync_path(path)
    fsync_path(root)


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A unique name in the same directory (same file system, so rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it replaces `path` in one rename.

    An existing `path` is moved aside first and removed after the new one is in place,
    so the name never points at a partial directory.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, ".tmpdir")
    tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            old = temporary_sibling(path, ".old")
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks: what the registry records of an artifact."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
