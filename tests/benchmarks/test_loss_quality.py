"""benchmarks/loss_quality.py: the report and the plot from a given leaderboard (no service, no training)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import loss_quality  # noqa: E402


def _row(name: str, values: list[float], ci: list[float]) -> dict[str, Any]:
    per_seed = [
        {"seed": s, "job_id": f"j{s}", "value": v, "map": v, "macro_f1": 0.5, "micro_f1": 0.5}
        for s, v in enumerate(values)
    ]
    mean = sum(values) / len(values)
    return {
        "candidate": {"name": name},
        "label": name,
        "n": len(values),
        "mean": mean,
        "sd": 0.01,
        "ci95": ci,
        "per_seed": per_seed,
    }


def _run(name: str, verdict: str, delta_ci: list[float]) -> dict[str, Any]:
    rows = [_row("apl", [0.80, 0.82, 0.81], [0.78, 0.84]), _row("bce", [0.70, 0.71, 0.69], [0.67, 0.73])]
    comparison = {
        "candidate": {"name": "apl"},
        "versus": {"name": "bce"},
        "delta": 0.11,
        "delta_ci95": delta_ci,
    }
    board = {
        "sweep_id": "s1",
        "metric": "map",
        "split": "test",
        "complete": True,
        "rows": rows,
        "verdict": verdict,
        "comparison": comparison,
        "method": "paired bootstrap, 2000 replicates",
    }
    baseline = {
        "features": "raw pixels (16x16 RGB)",
        "n": 3,
        "mean": 0.60,
        "sd": 0.02,
        "ci95": [0.55, 0.65],
        "per_seed": [{"seed": s, "test_map": 0.6} for s in range(3)],
    }
    hp = {"epochs": 3, "batch_size": 32, "learning_rate": 2e-3, "image_size": 128, "max_length": 128}
    child = {"started_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T10:01:40+00:00"}
    return {
        "name": name,
        "data": "digits-mosaics.zip (300 samples, 10 labels)",
        "base_model": "mobilenetv2-100",
        "hyperparameters": hp,
        "test_fraction": 0.2,
        "sweep_id": "s1",
        "status": "succeeded",
        "wall_s": 1200.0,
        "children": [child] * 6,
        "leaderboard": board,
        "baseline": baseline,
        "measured_at": "2026-12-01T10:20:00+00:00",
        "machine": "x86_64, 2 cores, CPU",
    }


def test_the_report_holds_the_tables_the_verdict_and_the_baseline(tmp_path: Path) -> None:
    results = {
        "runs": [
            _run("digits", "winner", [0.08, 0.14]),
            _run("digits-lite0", "no_clear_winner", [-0.01, 0.2]),
        ]
    }
    md, png = tmp_path / "results.md", tmp_path / "plot.png"
    md.write_text("# Results\n\n## Choosing the defaults\n\nhand-written\n", encoding="utf-8")
    loss_quality.write_report(results, md, png)
    text = md.read_text(encoding="utf-8")
    assert "hand-written" in text and text.count(loss_quality.START) == 1
    assert "| 1 | apl | 3 | 0.810 | 0.010 | 0.780 .. 0.840 | 0:0.800  1:0.820  2:0.810 | +0.210 |" in text
    assert (
        "**winner: apl**; apl leads bce by +0.110 test map (95% interval +0.080 to +0.140), which excludes 0"
        in text
    )
    assert "**no clear winner**" in text and "which includes 0" in text
    assert "mean test mAP 0.600, sd 0.020, 95% interval 0.550 .. 0.650, n 3" in text
    assert "20.0 min (6 jobs; each child 100 to 100 s" in text
    summary = "| digits-mosaics.zip, mobilenetv2-100 | winner | apl 0.810 | 0.810 (rank 1) | 0.600 |"
    assert summary + " +0.210 | +0.210 |" in text
    # Rewriting replaces the generated part and keeps the rest.
    results["runs"] = results["runs"][:1]
    loss_quality.write_report(results, md, png)
    again = md.read_text(encoding="utf-8")
    assert again.count(loss_quality.START) == 1 and "no clear winner" not in again and "hand-written" in again
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200


def test_new_runs_replace_earlier_ones_of_the_same_name() -> None:
    earlier = {"runs": [_run("digits", "winner", [0.1, 0.2]), _run("movies", "winner", [0.1, 0.2])]}
    newer = {"runs": [_run("digits", "no_clear_winner", [-0.1, 0.2])]}
    merged = loss_quality.merge(earlier, newer)
    assert [run["name"] for run in merged["runs"]] == ["movies", "digits"]
    assert merged["runs"][1]["leaderboard"]["verdict"] == "no_clear_winner"
