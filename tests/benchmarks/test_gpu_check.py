"""benchmarks/gpu_check.py: its CPU dry run end to end, and the pieces that only matter on the GPU machine.

The script is meant to run once, unattended, on a GPU machine that a later session may get
for a few minutes; these tests make sure it still runs there: the dry run (`--device cpu
--quick`) goes through every section, and the wheel and pytest plumbing that the device
needs is checked on its own.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpucheck import gputests, report, wheels  # noqa: E402
from gpucheck.timing import percentile  # noqa: E402

SECTIONS = {"loss", "training", "serving", "data_parallel", "gpu_tests"}
MODELS = ["minilm-l6", "mobilenetv2-100", "efficientnet-lite0"]


def numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The quick plan's own 120 s budget fits a quiet machine; a loaded one ran out of it (the
    # last section is then "not run", failing the run): this test checks the plumbing, not time.
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick"]
    done = subprocess.run(
        [*command, "--budget-s", "480", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def test_dry_run_reports_every_section_with_finite_numbers(dry_run: tuple[dict[str, Any], str]) -> None:
    data, _ = dry_run
    assert data["mode"] == "quick" and data["device"] == "cpu"
    assert set(data["sections"]) == SECTIONS
    assert all(section["status"] == "ok" for section in data["sections"].values())
    assert data["checks_passed"] is True
    assert data["non_finite"] == []
    assert all(math.isfinite(n) for n in numbers(data))
    env = data["environment"]
    assert {"date", "gpu", "torch", "python", "timm", "transformers"} <= set(env)
    assert "driver" in env["gpu"]


def test_dry_run_loss_section_checks_every_preset(dry_run: tuple[dict[str, Any], str]) -> None:
    loss = dry_run[0]["sections"]["loss"]
    assert [(tuple(r["shape"]), r["dtype"]) for r in loss["rows"]] == [
        (shape, dtype) for shape in ((8, 100), (32, 100), (32, 300)) for dtype in ("fp32", "bf16")
    ]
    for row in loss["rows"]:
        assert set(row["ms"]) == {"apl", "asl", "bce", "F.bce", "timm"}
        assert all(ms > 0 for ms in row["ms"].values())
        assert set(row["checks"]) == {"apl", "asl", "bce"}
        assert all(check["ok"] for check in row["checks"].values())
        assert row["timm_vs_asl_rel"] < 1e-3  # timm's ASL is the asl preset (no logit below its eps clamp)
    assert {(p["variant"], p["dtype"]) for p in loss["profiles"]} == {
        (v, d) for v in ("apl", "F.bce", "timm") for d in ("fp32", "bf16")
    }
    assert [g["met"] for g in loss["goals"]] == [None, None]  # goals are judged on CUDA only


def test_dry_run_trains_serves_and_runs_the_gpu_tests(dry_run: tuple[dict[str, Any], str]) -> None:
    sections = dry_run[0]["sections"]
    training = sections["training"]
    assert [row["model"] for row in training["rows"]] == MODELS
    for row in training["rows"]:
        for kind in ("train", "compute"):
            assert {row[kind]["fp32"]["precision"], row[kind]["bf16"]["precision"]} == {"fp32"}  # CPU
            assert row[kind]["fp32"]["steps_per_s"] > 0 and row[kind]["bf16"]["steps_per_s"] > 0
        assert row["loader_samples_per_s"] > 0
    assert [run["model"] for run in training["short_runs"]] == MODELS
    assert all(run["finite"] and run["epochs"] == 2 for run in training["short_runs"])
    serving = sections["serving"]
    assert [row["model"] for row in serving["rows"]] == MODELS
    assert all(row["ok"] and row["batched"]["inputs_per_call"] == 32 for row in serving["rows"])
    gpu_tests = sections["gpu_tests"]
    assert gpu_tests["result"] == "skipped" and gpu_tests["tests"] == gpu_tests["skipped"] >= 1


def test_dry_run_prints_one_table_with_a_row_per_case(dry_run: tuple[dict[str, Any], str]) -> None:
    _, stdout = dry_run
    lines = stdout.splitlines()
    header = lines.index("| section | case | result | goal | status |")
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    sections = [row.split(" | ")[0].strip("| ") for row in rows]
    # 6 loss rows, first calls, 2 profiles; 3 throughput and 3 short-run rows; 3 serving; gpu tests.
    assert sections.count("loss") == 9 and sections.count("training") == 6
    assert sections.count("serving") == 3 and sections.count("gpu tests") == 1
    assert not any("CHECK FAILED" in row for row in rows)
    assert lines[header - 2].startswith("gpu_check quick on cpu:")


@pytest.mark.parametrize(
    ("filename", "version", "machine", "expected"),
    [
        ("pydantic-2.14.4-py3-none-any.whl", (3, 12), "x86_64", True),
        (
            "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            (3, 12),
            "x86_64",
            True,
        ),
        (
            "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            (3, 11),
            "x86_64",
            False,
        ),
        ("pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_aarch64.whl", (3, 12), "x86_64", False),
        ("cryptography-46.0.0-cp311-abi3-manylinux_2_28_x86_64.whl", (3, 11), "x86_64", True),
        ("six-1.17.0-py2.py3-none-any.whl", (3, 12), "x86_64", True),
        ("numpy-2.3.0-cp312-cp312-win_amd64.whl", (3, 12), "x86_64", False),
    ],
)
def test_wheel_tags_decide_what_fits(
    filename: str, version: tuple[int, int], machine: str, expected: bool
) -> None:
    wheel = wheels.parse_wheel_name(filename)
    assert wheel is not None
    assert wheels.fits(wheel, version, machine) is expected


def test_not_a_wheel_is_ignored() -> None:
    assert wheels.parse_wheel_name("pydantic-2.14.4.tar.gz") is None
    assert wheels.parse_wheel_name("broken.whl") is None


def test_install_wheels_makes_a_carried_package_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = tmp_path / "wheels"
    carried.mkdir()
    with zipfile.ZipFile(carried / "gpu_check_carried-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("gpu_check_carried/__init__.py", "VALUE = 42\n")
    (carried / "other-1.0-cp27-cp27m-win32.whl").write_bytes(b"not even a zip: it never fits")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delitem(sys.modules, "gpu_check_carried", raising=False)

    site = wheels.install_wheels(carried, tmp_path / "site")

    assert site == tmp_path / "site" and sys.path[0] == str(site)
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(site), "/elsewhere"]
    import gpu_check_carried  # type: ignore[import-not-found]

    assert gpu_check_carried.VALUE == 42
    assert wheels.install_wheels(tmp_path / "site") is None  # a folder without wheels changes nothing


def test_gpu_tests_are_found_with_their_conftest_plugins() -> None:
    files = gputests.gpu_test_files(ROOT)
    assert ROOT / "tests/apl/test_gpu.py" in files
    assert all(gputests.MARKER in path.read_text() for path in files)
    assert gputests.conftest_plugins(ROOT, files) == ["tests.apl.conftest"]
    command = gputests.command(ROOT, files, Path("junit.xml"))
    assert command[:3] == [sys.executable, "-m", "pytest"] and "--noconftest" in command
    assert command[command.index("-m", 3) + 1] == "gpu"


def test_junit_counts(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="5" failures="1" errors="1" skipped="2"/></testsuites>'
    )
    assert gputests.summarize_junit(xml) == {"tests": 5, "passed": 1, "failed": 2, "skipped": 2}


def test_goal_status_says_by_how_much_a_goal_is_missed() -> None:
    assert report.goal_status({"met": True, "measured": 0.8, "target": "<= 1.00x"}) == "met (0.80x)"
    assert (
        report.goal_status({"met": False, "measured": 1.25, "target": "<= 1.00x"}) == "missed by 25% (1.25x)"
    )
    assert report.goal_status({"met": False, "measured": 1.5, "target": ">= 2.0x"}) == "missed by 25% (1.50x)"
    assert report.goal_status({"met": None, "measured": 6.0, "target": "<= 1.00x"}) == "n/a on cpu (6.00x)"


def test_report_json_is_strict_and_lists_non_finite_numbers(tmp_path: Path) -> None:
    written = report.write_json({"a": {"b": [1.0, float("nan")]}, "c": float("inf")}, tmp_path / "r.json")
    assert written["non_finite"] == ["$.a.b[1]", "$.c"]
    assert json.loads((tmp_path / "r.json").read_text())["a"]["b"] == [1.0, None]


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 50))


def test_dry_run_scales_one_job_over_two_gloo_processes(dry_run: tuple[dict[str, Any], str]) -> None:
    """Without GPUs the data-parallel section still runs: 1 process, then 2 gloo ranks of one job."""
    data, stdout = dry_run
    section = data["sections"]["data_parallel"]
    one, two = section["rows"]
    assert (one["devices"], one["backend"], two["devices"], two["backend"]) == (
        1,
        "single process",
        2,
        "gloo",
    )
    assert two["global_batch"] == 2 * one["global_batch"]
    assert all(row["steps"] >= 1 and row["steps_per_s"] > 0 for row in section["rows"])
    assert two["efficiency"] == pytest.approx(two["samples_per_s"] / (2 * one["samples_per_s"]))
    assert section["goals"][0]["met"] is None  # judged on GPUs only
    assert "| data-parallel | 2 device(s) |" in stdout and "scaling efficiency" in stdout
