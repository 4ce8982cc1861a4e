"""benchmarks/loss_search.py (loss_quality.py --search): the defaults-vs-tuned report and plot from
given sweeps (no service, no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import loss_search  # noqa: E402


def _row(name: str, mean: float, config: dict[str, Any], value: float | None) -> dict[str, Any]:
    return {
        "candidate": {"name": name},
        "n": 3,
        "mean": mean,
        "ci95": [mean - 0.02, mean + 0.02],
        "per_seed": [],
        "config": config,
        "search_value": value,
    }


def _run() -> dict[str, Any]:
    trials = [
        {"candidate": {"name": "bce"}, "number": 0, "params": {"learning_rate": 1e-3}, "state": "complete",
         "values": [0.5, 0.6], "value": 0.6, "job_id": "t0"},
        {"candidate": {"name": "apl"}, "number": 0, "params": {"learning_rate": 3e-4}, "state": "pruned",
         "values": [0.2], "value": 0.2, "job_id": "t1"},
    ]  # fmt: skip
    space = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}
    return {
        "name": "digits",
        "data": "digits-mosaics.zip",
        "base_model": "mobilenetv2-100",
        "workers": 2,
        "wall_s": 600.0,
        "search_s": 420.0,
        "machine": "x86_64, 2 cores, CPU",
        "sweep": {
            "id": "s1",
            "status": "succeeded",
            "trials": {"total": 12, "done": 12, "pruned": 4, "failed": 0, "running": 0},
            "spec": {
                "seeds": [0, 1, 2],
                "search": {"trials": 6, "sampler": "tpe", "pruner": "median", "space": space},
            },
        },
        "leaderboard": {
            "verdict": "no_clear_winner",
            "rows": [
                _row("bce", 0.93, {"learning_rate": 1e-3}, 0.6),
                _row("apl", 0.90, {"learning_rate": 3e-3}, 0.58),
            ],
            "comparison": {
                "candidate": {"name": "bce"},
                "versus": {"name": "apl"},
                "delta": 0.03,
                "delta_ci95": [-0.01, 0.07],
            },
        },
        "trials": {"items": trials},
        "baseline": {"mean": 0.756, "ci95": [0.697, 0.815]},
    }


def test_the_report_sets_each_loss_tuned_against_its_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = {"runs": [{"name": "digits", "leaderboard": {"rows": [_row("bce", 0.912, {}, None)]}}]}
    (tmp_path / "defaults.json").write_text(json.dumps(defaults))
    monkeypatch.setattr(loss_search, "DEFAULTS_JSON", tmp_path / "defaults.json")
    monkeypatch.setattr(loss_search, "SEARCH_PNG", tmp_path / "search.png")
    md = tmp_path / "results.md"
    md.write_text("# Results\n\nkept\n")
    loss_search.write_report({"runs": [_run()]}, md)
    text = md.read_text()
    assert text.startswith("# Results\n\nkept\n") and loss_search.START in text and loss_search.END in text
    assert (
        "| bce | 0.912 (0.892 .. 0.932) | 0.930 (0.910 .. 0.950) | +0.018 | learning_rate 0.001 | 0.600 |"
        in text
    )
    assert "| apl | – | 0.900 (0.880 .. 0.920) | – |" in text  # no defaults run of apl to compare with
    assert "4 of 12 pruned" in text and "**no_clear_winner** (bce - apl +0.030" in text
    assert "apl #0: 0.0003, pruned, 0.200" in text and "baseline on the same splits: 0.756" in text
    loss_search.write_report({"runs": [_run()]}, md)  # rewritten in place, not appended
    assert md.read_text().count(loss_search.START) == 1
    with Image.open(tmp_path / "search.png") as image:
        assert image.size[0] > 300
