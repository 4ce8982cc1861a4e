"""Starting the real `aplserve` commands as process groups, and making sure they all end.

Each command starts in its own session (process group). The embedded worker that
`aplserve serve` starts makes a session of its own, so before stopping anything we
note every descendant's process group and end those too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

APLSERVE = str(Path(sys.executable).with_name("aplserve"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@dataclass
class Service:
    """One started command: its process, its log file, the process groups it made."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    groups: set[int] = field(default_factory=set)

    def remember_groups(self) -> None:
        for pid in {self.process.pid, *descendants(self.process.pid)}:
            group = _pgid(pid)
            if group is not None and group != os.getpgid(0):
                self.groups.add(group)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (the clean path), then SIGKILL to every group left after `grace` seconds."""
        self.remember_groups()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=10)


def start(name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Service:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [APLSERVE, *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Service(name, process, log)


def wait_until_healthy(service: Service, url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(
                f"{service.name} exited with {service.process.returncode}:\n{service.log_text()}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                service.remember_groups()
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{service.name} did not answer /healthz in {timeout} s:\n{service.log_text()}")


def create_key(env: Mapping[str, str], owner: str) -> str:
    done = subprocess.run(
        [APLSERVE, "keys", "create", "--name", owner],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def base_env(**values: str) -> dict[str, str]:
    """The caller's environment without any APLSERVE_* setting, plus `values`; small thread pools."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("APLSERVE_")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(values)
    return env
