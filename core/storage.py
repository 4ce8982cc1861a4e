"""Storage faults: recognising a full disk wherever it surfaces, and removing stale partial files.

A full disk reaches the code in many shapes: OSError(ENOSPC) from Python file
writes, EDQUOT from a quota, a RuntimeError or SafetensorError from torch and
safetensors (Rust I/O errors carry only their text), SQLite's "database or disk is
full" and PostgreSQL's DiskFull (SQLSTATE 53100), often wrapped as the cause of
another exception. `is_storage_full` looks through all of them, so the API answers
507 `storage_full` and a job fails with `storage_full` however the write failed.

Partial files are what a process killed mid-write leaves behind (core.files lists
where each kind lives). `remove_stale` deletes those older than a grace period, so
one that belongs to a write still in progress in another process is never touched.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = (
    "no space left on device",
    "disk quota exceeded",
    "database or disk is full",
    "storagefull",
    "could not extend file",
)
_PG_DISK_FULL = "53100"


def _one_is_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return True
    if getattr(error, "sqlstate", None) == _PG_DISK_FULL or getattr(error, "pgcode", None) == _PG_DISK_FULL:
        return True
    text = str(error).lower()
    return any(marker in text for marker in _FULL_TEXTS)


def is_storage_full(error: BaseException) -> bool:
    """Whether `error`, or anything it was raised from (cause, context, DB-API `orig`), is a full disk."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _one_is_full(current):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return False


@dataclass(frozen=True)
class Removed:
    path: Path
    size_bytes: int


def _newest_mtime(path: Path) -> float:
    """A directory's age is that of its newest entry: writes into a staging tree keep it fresh."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            try:
                newest = max(newest, child.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(child.lstat().st_size for child in path.rglob("*") if not child.is_dir())
    return path.lstat().st_size


def remove_stale(candidates: Iterable[Path], grace_seconds: float, now: float | None = None) -> list[Removed]:
    """Delete the candidate files and directories last written more than `grace_seconds` ago; log each."""
    now = time.time() if now is None else now
    removed = []
    for path in candidates:
        try:
            if now - _newest_mtime(path) < grace_seconds:
                continue
            size = _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("could not remove the stale partial file %s: %s", path, error)
            continue
        log.warning("removed stale partial file %s (%d bytes)", path, size)
        removed.append(Removed(path, size))
    return removed
