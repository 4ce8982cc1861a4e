"""Command line, the order of the sections and the report (see benchmarks/gpu_check.py)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpucheck import wheels

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WHEELS = ROOT / ".gpu-wheels"
SECTIONS = ("loss", "training", "serving", "data_parallel", "gpu_tests")
PIP_DOWNLOAD = (
    "python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
    "--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "
    "-d .gpu-wheels pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 "
    "typing-inspection==0.4.5 typing-extensions==4.16.0"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description="One prepared check for a GPU machine.")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 1-2 steps (the CPU dry run)")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="where the JSON goes")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="carried wheels (pydantic)")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="time budget (default 450 s, quick 120 s)"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    return parser.parse_args(argv)


def ensure_packages(folder: Path) -> None:
    """Make pydantic importable from carried wheels where the interpreter lacks it, or explain and exit."""
    missing = wheels.missing_packages()
    if missing and folder.is_dir():
        site = wheels.install_wheels(folder)
        print(f"gpu_check: unpacked the wheels of {folder} into {site}", flush=True)
        missing = wheels.missing_packages()
    if missing:
        sys.exit(
            f"gpu_check: {', '.join(missing)} cannot be imported (apl.spec needs pydantic). Carry the "
            f"wheels: on the development machine run\n  {PIP_DOWNLOAD}\n"
            "and name .gpu-wheels in the run's carry."
        )


def run_section(name: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The section's result (status ok), or status error with the exception; later sections still run."""
    started = time.perf_counter()
    print(f"gpu_check: {name} ...", flush=True)
    try:
        section = {"status": "ok", **body()}
    except Exception as exc:
        tail = traceback.format_exc()[-3000:]
        section = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500], "traceback": tail}
        section["checks_passed"] = False
        print(tail, file=sys.stderr, flush=True)
    section["seconds"] = time.perf_counter() - started
    return section


def run_sections(plan: Any, deadline: Any, wanted: set[str], root: Path, cuda: bool) -> dict[str, Any]:
    from gpucheck import gputests, losses, parallel, serving, training

    sections: dict[str, Any] = {}
    if "loss" in wanted:
        sections["loss"] = run_section("loss", lambda: losses.run(plan, deadline))
    trained: dict[str, Any] = {}

    def training_body() -> dict[str, Any]:
        section, extra = training.run(plan, deadline, root)
        trained.update(extra["results"])
        return section

    if wanted & {"training", "serving"}:  # serving serves the short runs' models
        sections["training"] = run_section("training", training_body)
    if "serving" in wanted:
        sections["serving"] = run_section("serving", lambda: serving.run(plan, deadline, trained, root))
    if "data_parallel" in wanted:
        sections["data_parallel"] = run_section("data_parallel", lambda: parallel.run(plan, deadline, root))
    if "gpu_tests" in wanted:
        sections["gpu_tests"] = run_section("gpu_tests", lambda: gputests.run(plan, deadline, ROOT, cuda))
    return sections


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the profiler's start/stop chatter
    ensure_packages(args.wheels)
    from dataclasses import asdict

    import torch

    from gpucheck import environment, report
    from gpucheck.plan import Deadline, full_plan, quick_plan

    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        sys.exit("gpu_check: --device cuda, but torch sees no CUDA device")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu"
    workers = max(0, min(12, (os.cpu_count() or 1) - 2)) if device == "cuda" else 0
    plan = quick_plan(device) if args.quick else full_plan(device, workers)
    deadline = Deadline(args.budget_s or (120.0 if args.quick else 450.0))
    wanted = {name.strip() for name in args.sections.split(",") if name.strip()}
    if not wanted <= set(SECTIONS):
        sys.exit(f"gpu_check: unknown sections {sorted(wanted - set(SECTIONS))}; choose from {SECTIONS}")
    env = environment.describe(torch.device(device), ROOT)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        sections = run_sections(plan, deadline, wanted, Path(tmp), cuda)
    raw = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "device": device,
        "budget_s": deadline.budget_s,
        "plan": asdict(plan),
        "environment": env,
        "sections": sections,
        "goals": [goal for section in sections.values() for goal in section.get("goals", [])],
        "checks_passed": all(s["status"] == "ok" and s["checks_passed"] for s in sections.values()),
        "elapsed_s": deadline.elapsed(),
    }
    clean = report.write_json(raw, args.out)
    print(report.table(raw), flush=True)
    print(
        f"gpu_check: wrote {args.out}"
        + (f"; non-finite numbers at {clean['non_finite']}" if clean["non_finite"] else "")
    )
    return 0 if raw["checks_passed"] and not clean["non_finite"] else 1
