"""Faults the reliability tests inject into real processes, never into the shared services.

- `PrivateRedis`: a `redis-server` of the test's own on a free port (no persistence), to
  SIGSTOP (a hung broker), SIGCONT, FLUSHALL (a broker that lost its data) and stop. The
  shared Redis on 6379 is never touched.
- `on_tmpfs`: run a command in a private mount namespace (`unshare --mount`, plus
  `--user --map-root-user` when not root, which needs no privilege where unprivileged
  user namespaces are allowed) with a small tmpfs mounted on a directory first. The
  full disk is real (the kernel answers ENOSPC), needs no loop device, and disappears
  with the process, so a failed test leaves no mount behind. The test sees the
  process's files through /proc/<pid>/root.
- `open_files_under`: which files under a directory a process holds open (a deleted file
  held open keeps its space), read from /proc/<pid>/fd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.worker.harness import free_port, wait_for


class PrivateRedis:
    """A redis-server started by the test, on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = workdir / f"redis-{self.port}.log"
        workdir.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(workdir), "--logfile", str(self.log_path)]
        self.process = subprocess.Popen(command, start_new_session=True)
        self.stopped = False
        wait_for(self._answers, 20, f"redis-server on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def sigstop(self) -> None:
        """The server stops answering but keeps its port: connections hang, they are not refused."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stopped = True

    def sigcont(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def queue_length(self, queue: str) -> int:
        with self.client() as client:
            return int(client.llen(queue))

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.stopped:
                self.sigcont()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir)
    try:
        yield server
    finally:
        server.stop()


def on_tmpfs(mountpoint: Path, size_bytes: int, command: list[str]) -> list[str]:
    """`command` run with a tmpfs of `size_bytes` on `mountpoint`, in its own mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise AssertionError("unshare (util-linux) is not installed")
    mountpoint.mkdir(parents=True, exist_ok=True)
    flags = ["--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user", *flags]
    script = 'mount -t tmpfs -o size="$1" aplserve-test "$2" && shift 2 && exec "$@"'
    return [unshare, *flags, "sh", "-c", script, "sh", str(size_bytes), str(mountpoint), *command]


def seen_by(pid: int, path: Path) -> Path:
    """`path` as the process `pid` sees it (inside its mount namespace)."""
    return Path(f"/proc/{pid}/root") / path.relative_to("/")


def on_a_tmpfs(pid: int, path: Path) -> bool:
    for line in Path(f"/proc/{pid}/mounts").read_text().splitlines():
        device, mounted, kind, *_ = line.split()
        if mounted == str(path) and kind == "tmpfs" and device == "aplserve-test":
            return True
    return False


def open_files_under(pid: int, directory: Path) -> list[str]:
    """Targets of the process's open file descriptors that lie under `directory` (deleted ones too)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def free_bytes(pid: int, directory: Path) -> int:
    stats = os.statvfs(seen_by(pid, directory))
    return stats.f_bavail * stats.f_frsize


def elapsed(since: float) -> float:
    return time.monotonic() - since
