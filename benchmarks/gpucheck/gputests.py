"""The suite's `gpu`-marked tests, run by pytest in a subprocess.

The device machine has pytest but not the service stack that `tests/conftest.py` imports
(SQLAlchemy for the PostgreSQL fixtures), so the run skips conftest discovery
(`--noconftest`) and loads the conftest files between `tests/` and each GPU test file as
plugins (`-p tests.apl.conftest`): their fixtures and the hook that skips `gpu` tests
without CUDA. Only the files that hold a `gpu` mark are collected.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gpucheck.plan import Deadline, Plan

MARKER = "pytest.mark.gpu"
OUTPUT_TAIL = 4000
#: Below this much time left the tests are not started (pytest's start alone takes seconds).
MIN_TIMEOUT_S = 20.0


def gpu_test_files(root: Path) -> list[Path]:
    """Test modules under tests/ that mark at least one test `gpu`."""
    return sorted(
        path
        for path in (root / "tests").rglob("test_*.py")
        if MARKER in path.read_text(encoding="utf-8", errors="replace")
    )


def conftest_plugins(root: Path, files: list[Path]) -> list[str]:
    """Dotted names of the conftest files between tests/ and each file (tests/conftest.py excluded)."""
    tests = root / "tests"
    plugins: list[str] = []
    for path in files:
        folder = path.parent
        chain = []
        while folder != tests and tests in folder.parents:
            if (folder / "conftest.py").is_file():
                chain.append(".".join((folder / "conftest").relative_to(root).parts))
            folder = folder.parent
        plugins += [name for name in reversed(chain) if name not in plugins]
    return plugins


def summarize_junit(path: Path) -> dict[str, int]:
    """Counts from pytest's JUnit XML: tests, passed, failed (failures + errors), skipped."""
    tree = ET.parse(path)
    suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else list(tree.getroot())
    total = {
        key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")
    }
    failed = total["failures"] + total["errors"]
    return {
        "tests": total["tests"],
        "passed": total["tests"] - failed - total["skipped"],
        "failed": failed,
        "skipped": total["skipped"],
    }


def command(root: Path, files: list[Path], junit: Path) -> list[str]:
    plugins = [arg for name in conftest_plugins(root, files) for arg in ("-p", name)]
    return [
        sys.executable,
        *("-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", *plugins),
        *("-m", "gpu", "--junitxml", str(junit), "-o", "junit_family=xunit1"),
        *(str(path.relative_to(root)) for path in files),
    ]


def run(plan: Plan, deadline: Deadline, root: Path, cuda: bool) -> dict[str, Any]:
    """pytest -m gpu over the GPU test files; on CPU they all skip, which passes."""
    if not plan.gpu_tests:
        return {"result": "not run", "reason": "quick mode (the CPU dry run)", "checks_passed": True}
    if importlib.util.find_spec("pytest") is None:
        return {"result": "not run", "reason": "pytest is not installed here", "checks_passed": not cuda}
    files = gpu_test_files(root)
    timeout = min(plan.gpu_tests_timeout_s, deadline.left())
    if timeout < MIN_TIMEOUT_S:
        return {"result": "not run", "reason": "time budget spent", "checks_passed": False}
    with tempfile.TemporaryDirectory(prefix="gpu-tests-") as tmp:
        junit = Path(tmp) / "junit.xml"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
        }
        try:
            done = subprocess.run(
                command(root, files, junit),
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"result": "timed out", "timeout_s": timeout, "checks_passed": False}
        counts = (
            summarize_junit(junit)
            if junit.is_file()
            else {"tests": 0, "passed": 0, "failed": 0, "skipped": 0}
        )
    output = (done.stdout + done.stderr)[-OUTPUT_TAIL:]
    if counts["failed"] or done.returncode not in (0, 5):
        result = "failed"
    elif counts["passed"]:
        result = "passed"
    else:
        result = "skipped"
    # On CUDA every gpu test must run and pass; without CUDA they must skip cleanly.
    ok = result == "passed" and counts["skipped"] == 0 if cuda else result in ("passed", "skipped")
    return {
        "result": result,
        "files": [str(p.relative_to(root)) for p in files],
        **counts,
        "returncode": done.returncode,
        "output_tail": output,
        "checks_passed": ok,
    }
