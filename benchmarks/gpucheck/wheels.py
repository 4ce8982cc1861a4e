"""Carried wheels: making pure and binary wheels importable without pip or a network.

The device machine's python3 has torch, timm and transformers but not pydantic, which
`apl.spec` (and through it `apl.losses` and `apl.training`) imports. Its wheels are small
and travel in an ignored folder (`.gpu-wheels/`); a wheel is a zip whose top level is
the package itself, so unpacking the ones that fit this interpreter into a temporary
folder and putting that folder first on `sys.path` (and `PYTHONPATH`, for subprocesses)
is an install. Binary wheels (pydantic-core) must match the interpreter and machine,
hence the tag check.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: Packages the carried folder must provide when the interpreter lacks them.
NEEDED = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel file name (PEP 427) that decide whether it fits."""

    distribution: str
    version: str
    python_tags: frozenset[str]
    abi_tags: frozenset[str]
    platform_tags: frozenset[str]


def parse_wheel_name(filename: str) -> WheelName | None:
    """`name-version(-build)?-python-abi-platform.whl`, or None for anything else."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    python, abi, plat = parts[-3:]
    return WheelName(
        distribution=parts[0].lower().replace(".", "_"),
        version=parts[1],
        python_tags=frozenset(python.split(".")),
        abi_tags=frozenset(abi.split(".")),
        platform_tags=frozenset(plat.split(".")),
    )


def fits(wheel: WheelName, version: tuple[int, int] | None = None, machine: str | None = None) -> bool:
    """Whether the wheel installs on this CPython (or the given version and machine)."""
    major, minor = version or sys.version_info[:2]
    machine = machine or platform.machine()
    cpython = f"cp{major}{minor}"
    pure = {"py3", f"py{major}", f"py{major}{minor}"}
    if wheel.abi_tags == {"none"} and wheel.python_tags & pure:
        python_ok = True
    else:
        python_ok = cpython in wheel.python_tags and bool(wheel.abi_tags & {cpython, "abi3", "none"})
    platform_ok = "any" in wheel.platform_tags or any(
        tag.startswith(("manylinux", "musllinux", "linux")) and tag.endswith(f"_{machine}")
        for tag in wheel.platform_tags
    )
    return python_ok and platform_ok


def select_wheels(folder: Path) -> list[Path]:
    """The wheels in `folder` that fit this interpreter, one per distribution (newest name wins)."""
    chosen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.whl")):
        wheel = parse_wheel_name(path.name)
        if wheel is not None and fits(wheel):
            chosen[wheel.distribution] = path
    return [chosen[name] for name in sorted(chosen)]


def install_wheels(folder: Path, target: Path | None = None) -> Path | None:
    """Unpack the fitting wheels of `folder` into `target` and put it first on the import path.

    Returns the folder added, or None when `folder` holds no fitting wheel. The folder is
    also prepended to PYTHONPATH so that subprocesses (the pytest run) see the same packages.
    """
    wheels = select_wheels(folder)
    if not wheels:
        return None
    site = target or Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return site


def missing_packages() -> list[str]:
    """The packages of NEEDED that this interpreter cannot import."""
    import importlib.util

    return [name for name in NEEDED if importlib.util.find_spec(name) is None]
