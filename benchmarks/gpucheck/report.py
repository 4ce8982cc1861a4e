"""The one table the run prints (Markdown, to paste into docs/gpu.md) and the JSON it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HEADER = ("section", "case", "result", "goal", "status")


def goal_status(goal: dict[str, Any]) -> str:
    """'met', 'missed by N%' (how far from the target) or 'n/a on cpu'."""
    met, measured = goal["met"], goal["measured"]
    if met is None:
        return f"n/a on cpu ({measured:.2f}x)"
    if met:
        return f"met ({measured:.2f}x)"
    target = float(goal["target"].split()[1].rstrip("x"))
    if goal["target"].startswith("<="):
        return f"missed by {100 * (measured / target - 1):.0f}% ({measured:.2f}x)"
    return f"missed by {100 * (1 - measured / target):.0f}% ({measured:.2f}x)"


def _goal_for(goals: list[dict[str, Any]], name: str) -> tuple[str, str]:
    for goal in goals:
        if goal["name"] == name:
            return goal["target"], goal_status(goal)
    return "-", "-"


def loss_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    out = []
    for row in section["rows"]:
        shape = f"{row['shape'][0]}x{row['shape'][1]}"
        ms = ", ".join(f"{k} {v:.3f}" for k, v in row["ms"].items())
        worst_value = max(c["value_rel_err"] for c in row["checks"].values())
        worst_grad = max(c["grad_max_err"] for c in row["checks"].values())
        ok = all(c["ok"] for c in row["checks"].values())
        result = (
            f"ms {ms}; apl/F.bce {row['ratio_vs_bce']['apl']:.2f}x; vs float64: value {worst_value:.1e}, "
            f"grad {worst_grad:.1e} ({row['path']['apl']})"
        )
        target, status = _goal_for(section["goals"], f"loss apl/F.bce {shape} {row['dtype']}")
        out.append(("loss", f"{shape} {row['dtype']}", result, target, status if ok else "CHECK FAILED"))
    if section["rows"]:
        first = section["rows"][0]
        calls = ", ".join(f"{k} {v / 1000:.2f} s" for k, v in first["first_call_ms"].items())
        notes = "; ".join(first["warnings"]) or "no warnings"
        stats = section["compile"]
        notes += (
            f"; {stats['kernel_configs']} compiled kernel configs, {stats.get('unique_graphs', '?')} graphs"
        )
        out.append(
            (
                "loss",
                f"first call {first['shape'][0]}x{first['shape'][1]} fp32",
                calls + f"; {notes}",
                "-",
                "-",
            )
        )
    for entry in section["profiles"]:
        if entry["variant"] != "apl":
            continue
        others = [p for p in section["profiles"] if p["dtype"] == entry["dtype"]]
        counts = ", ".join(f"{p['variant']} {p['count']} ({p['total_us']:.0f} us)" for p in others)
        top = entry["top"][0]["name"] if entry["top"] else "-"
        shape = f"{entry['shape'][0]}x{entry['shape'][1]}"
        out.append(
            ("loss", f"{entry['unit']} {shape} {entry['dtype']}", f"{counts}; apl's largest: {top}", "-", "-")
        )
    return out


def training_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    out = []
    for row in section["rows"]:
        train, compute = row["train"], row["compute"]
        result = (
            f"train fp32 {train['fp32']['steps_per_s']:.2f} / bf16 {train['bf16']['steps_per_s']:.2f} "
            "steps/s "
            f"({train['fp32']['samples_per_s']:.0f} / {train['bf16']['samples_per_s']:.0f} samples/s, "
            f"precision {train['bf16']['precision']}); compute {row['ratio_compute']:.2f}x "
            f"({compute['fp32']['samples_per_s']:.0f} / {compute['bf16']['samples_per_s']:.0f} samples/s); "
            f"loader {row['loader_samples_per_s']:.0f} samples/s; peak {train['fp32']['peak_gib']:.1f} GiB"
        )
        case = f"{row['model']} batch {train['fp32']['batch']}, {row['input']}"
        target, status = _goal_for(section["goals"], f"training bf16/fp32 {row['model']}")
        out.append(("training", case, result, f"bf16/fp32 {target}", status))
    for run in section["short_runs"]:
        losses = " -> ".join(f"{v:.3f}" for v in run["train_loss"])
        result = f"train loss {losses}; val mAP {run['map']:.3f}; {run['seconds']:.1f} s"
        status = (
            ("ok" if run["falls"] else "ok (finite; no fall required in quick mode)")
            if run["ok"]
            else "CHECK FAILED"
        )
        out.append(
            ("training", f"{run['model']} short run {run['precision']}", result, "falls, finite", status)
        )
    return out


def serving_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    out = []
    for row in section["rows"]:
        one, many = row["single"], row["batched"]
        result = (
            f"single {one['inputs_per_s']:.0f} inputs/s "
            f"(p50 {one['p50_ms']:.2f}, p99 {one['p99_ms']:.2f} ms); "
            f"batch {many['inputs_per_call']} {many['inputs_per_s']:.0f} inputs/s (p50 {many['p50_ms']:.2f}, "
            f"p99 {many['p99_ms']:.2f} ms); answers differ by {row['max_answer_difference']:.1e}"
        )
        target, status = _goal_for(
            section["goals"], f"serving batch{many['inputs_per_call']}/single {row['model']}"
        )
        out.append(
            (
                "serving",
                f"{row['model']} on {row['device']}",
                result,
                target,
                status if row["ok"] else "CHECK FAILED",
            )
        )
    return out


def gpu_test_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    if section["result"] == "not run":
        status = "-" if section["checks_passed"] else "CHECK FAILED"
        return [("gpu tests", "pytest -m gpu", f"not run: {section['reason']}", "all pass on CUDA", status)]
    if "tests" not in section:
        return [("gpu tests", "pytest -m gpu", section["result"], "all pass on CUDA", "CHECK FAILED")]
    result = f"{section['passed']} passed, {section['failed']} failed, {section['skipped']} skipped"
    status = "ok" if section["checks_passed"] else "CHECK FAILED"
    return [("gpu tests", "pytest -m gpu", result, "all pass on CUDA", status)]


def parallel_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per device count (steps/s, samples/s), the efficiency on the N-device row."""
    out = [("data-parallel", "-", f"skipped: {why}", "-", "-") for why in section["skipped"]]
    for row in section["rows"]:
        result = (
            f"{row['steps_per_s']:.2f} steps/s, {row['samples_per_s']:.1f} samples/s "
            f"(global batch {row['global_batch']}, {row['backend']})"
        )
        target, status = "-", "-"
        if "efficiency" in row:
            result += f"; scaling efficiency {row['efficiency']:.2f}"
            target, status = _goal_for(section["goals"], f"data-parallel efficiency {row['devices']} devices")
        out.append(("data-parallel", f"{row['devices']} device(s)", result, target, status))
    return out


ROWS = {
    "loss": loss_rows,
    "training": training_rows,
    "serving": serving_rows,
    "data_parallel": parallel_rows,
    "gpu_tests": gpu_test_rows,
}


def table(report: dict[str, Any]) -> str:
    """The environment lines, then one Markdown table over every section."""
    env = report["environment"]
    gpu = env["gpu"]
    lines = [
        f"gpu_check {report['mode']} on {report['device']}: {env['date']}, GPU {gpu['name']}, "
        f"driver {gpu['driver']}, torch {env['torch']} (CUDA {gpu.get('cuda_runtime', '-')}), "
        f"python {env['python']}, timm {env['timm']}, transformers {env['transformers']}, "
        f"commit {env['commit']}, sources {env['source_digest']}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for name, section in report["sections"].items():
        if section["status"] != "ok":
            rows = [(name, "-", f"ERROR: {section['error']}", "-", "CHECK FAILED")]
        else:
            rows = ROWS[name](section)
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    verdict = "all checks passed" if report["checks_passed"] else "SOME CHECKS FAILED"
    lines += ["", f"{verdict}; {report['elapsed_s']:.0f} s"]
    return "\n".join(lines)


def sanitize(value: Any, path: str, bad: list[str]) -> Any:
    """The report with every non-finite float replaced by None, and where each one was."""
    if isinstance(value, float) and not math.isfinite(value):
        bad.append(path)
        return None
    if isinstance(value, dict):
        return {k: sanitize(v, f"{path}.{k}", bad) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    return value


def write_json(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """Strict JSON (no NaN): non-finite numbers become null and are listed under `non_finite`."""
    bad: list[str] = []
    clean = sanitize(report, "$", bad)
    clean["non_finite"] = bad
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return clean
