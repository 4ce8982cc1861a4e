"""A node-local, size-bounded, least-recently-used cache of stored objects (datasets, model archives).

With object storage a worker materialises a dataset once per host, and the API a model
archive once per host, instead of downloading it for every job or every model load.

* Bounded: after each fill, entries least recently used are removed until the cache
  holds at most `max_bytes` (the entry just filled is never removed, however large).
* Recency is an entry's access time, set explicitly on every hit (so `noatime` mounts
  do not matter); its modification time stays that of the fill.
* Checksum-verified: the caller's `fill` verifies what it downloaded against the
  object's recorded SHA-256 before the entry is put in place (core.s3).
* Safe for several processes on one host: fills and evictions hold an exclusive
  `flock` on `<root>/.lock`, a fill writes a temporary name (`.<name>.<hex>.tmp`) and
  renames it, so no process ever sees a half-written entry. Two processes asking for
  the same entry download it once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class Missing(Exception):
    """The object a fill was asked for does not exist in storage."""


class NodeCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def get(self, name: str, fill: Callable[[Path], None]) -> Path | None:
        """The entry `name` (a layout path: "datasets/<id>", "artifacts/<id>.tar"), filled on a miss.

        `fill(temporary)` writes the file or directory at `temporary` (verified), or raises
        `Missing`; then this returns None.
        """
        target = self.root / name
        if target.exists():
            _touch(target)
            return target
        with self._locked():
            if target.exists():  # another process filled it while this one waited
                _touch(target)
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
            try:
                fill(temporary)
                os.replace(temporary, target)
            except Missing:
                return None
            finally:
                _remove(temporary)
            _touch(target)
            self._evict_locked(keep=target)
        return target

    def discard(self, name: str) -> None:
        with self._locked():
            _remove(self.root / name)

    def entries(self) -> list[tuple[Path, float, int]]:
        """(path, last use, bytes) of every entry: the children of each kind's directory."""
        found = []
        for kind in sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []:
            for entry in kind.iterdir():
                if entry.name.startswith("."):
                    continue
                try:
                    found.append((entry, entry.stat().st_atime, _size(entry)))
                except FileNotFoundError:
                    continue
        return found

    def size_bytes(self) -> int:
        return sum(size for _, _, size in self.entries())

    def _evict_locked(self, keep: Path) -> None:
        entries = sorted(self.entries(), key=lambda item: item[1])
        total = sum(size for _, _, size in entries)
        for path, _, size in entries:
            if total <= self.max_bytes:
                return
            if path == keep:
                continue
            log.info("cache: evicting %s (%d bytes, least recently used)", path, size)
            _remove(path)
            total -= size

    def partials(self) -> list[Path]:
        """Temporaries an interrupted fill left behind (for the start-up stale-partials sweep)."""
        if not self.root.is_dir():
            return []
        return sorted(self.root.glob("*/.*.tmp"))


def _touch(path: Path) -> None:
    """Mark a use: access time now, modification time unchanged."""
    with suppress(FileNotFoundError):
        os.utime(path, (time.time(), path.stat().st_mtime))


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
