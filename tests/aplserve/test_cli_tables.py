"""CLI tables at 80 columns: ids stay whole, sample texts and label lists wrap, the least needed go;
the model and job lists keep what tells their rows apart (name, dataset, loss, role, sweep)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from aplserve.client import Job, Model
from aplserve.commands.common import table
from aplserve.commands.jobs import jobs_table
from aplserve.commands.models import models_table

SAMPLE = (
    "A wandering samurai protects a village of farmers from bandits in a long and beautifully shot "
    "epic about honour, duty and the price of violence"
)
LABELS = "drama, action, adventure, history, war, romance"


def _render(rows: object, width: int = 80) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(rows)
    return out.getvalue().splitlines()


def _words(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def test_wrapped_columns_keep_every_word_and_fixed_columns_stay_whole() -> None:
    rows = table("rank", "sample", "score", "given", "model says", wrap=("sample", "given", "model says"))
    rows.add_row("1", SAMPLE, "0.931", LABELS, "+comedy -war")
    lines = _render(rows)
    assert all(len(line) <= 80 for line in lines)
    text = _words(lines)
    for word in (*SAMPLE.split(), *LABELS.replace(",", "").split(), "+comedy", "-war", "0.931"):
        assert word in text.split() or word + "," in text.split(), word
    assert "…" not in text and "..." not in text


def test_optional_columns_go_first_named_first_when_the_rest_cannot_fit() -> None:
    columns = ("id", "owner id", "created at", "status", "name", "note")
    rows = table(*columns, flexible=("name",), wrap=("note",), optional=("created at", "owner id"))
    rows.add_row("a1b2c3d4", "owner-0123456789abcdef", "2026-12-07 16:30:00", "succeeded", "x" * 40, SAMPLE)
    header = _render(rows, width=80)[0].split()
    assert "created" not in header and header[:2] == ["id", "owner"]
    header = _render(rows, width=64)[0].split()
    assert "created" not in header and "owner" not in header
    assert header[0] == "id" and "status" in header
    wide = _render(rows, width=rows.natural_width())[0].split()
    assert "created" in wide and "owner" in wide


def test_a_flexible_column_ends_with_an_ellipsis_instead_of_wrapping() -> None:
    rows = table("id", "name", flexible=("name",))
    rows.add_row("a1b2c3d4", "n" * 200)
    lines = _render(rows)
    assert len(lines) == 3 and lines[-1].rstrip().endswith("…")


def _model(**fields: Any) -> Model:
    base: dict[str, Any] = {
        "id": "5d2c7e1a-9b3f-4c8d-8e6a-1f2b3c4d5e6f",
        "job_id": "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f",
        "base_model": "mobilenetv2-100",
        "modality": "image",
        "labels": ["a", "b"],
        "thresholds": {"a": 0.5, "b": 0.5},
        "metrics": {"map": 0.71234},
        "artifact": {"sha256": "0" * 64, "size_bytes": 1},
        "created_at": datetime(2026, 12, 7, 16, 30, tzinfo=UTC),
        "dataset_id": "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55",
        "dataset_name": "flowers-2026-photos",
        "loss": "apl",
    }
    return Model.model_validate(base | fields)


def _job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f",
        "status": "succeeded",
        "spec": {"dataset_id": "3f1c2a9e", "base_model": "minilm-l6", "loss": {"name": "apl"}},
        "created_at": datetime(2026, 12, 7, 16, 30, tzinfo=UTC),
        "progress": {"epoch": 3, "epochs": 3},
        "best_metrics": {"map": 0.51},
    }
    return Job.model_validate(base | fields)


SWEEP = "77aa88bb-1111-4222-8333-444455556666"


def _cells(lines: list[str], columns: list[str]) -> list[dict[str, str]]:
    """The rows of a rendered table as {column: text}, a wrapped cell's lines joined (without the
    spaces, so that a word folded over two lines reads whole)."""
    header = lines[0]
    starts = [header.index(column) for column in columns]
    assert header.split() == " ".join(columns).split(), header
    rows: list[dict[str, str]] = []
    for line in lines[2:]:
        if line.strip().startswith("mAP:"):  # the caption under a list: which split the numbers are on
            break
        parts = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        if parts[0]:
            rows.append(dict(zip(columns, parts, strict=True)))
        else:  # a wrapped cell's next line
            for column, part in zip(columns, parts, strict=True):
                rows[-1][column] += part
    return [{column: text.replace(" ", "") for column, text in row.items()} for row in rows]


def test_models_without_sweeps_show_name_dataset_loss_and_base_model_at_80_columns() -> None:
    rows = models_table([_model(name="genres v2 (apl)"), _model(dataset_name="news", loss="focal")], False)
    lines = _render(rows)
    assert all(len(line) <= 80 for line in lines)
    columns = ["id", "name", "dataset", "loss", "base model", "mAP", "created"]
    first, second = _cells(lines, columns)
    # Names wrap rather than lose their end; the base model alone may end with an ellipsis.
    assert (first["name"], first["dataset"], first["loss"]) == ("genresv2(apl)", "flowers-2026-photos", "apl")
    assert first["base model"].startswith("mobilenet") and first["mAP"] == "0.712"
    assert (second["name"], second["dataset"], second["loss"]) == ("-", "news", "focal")
    assert "validation split" in lines[-1], "the list says which split its mAP is on"


def test_a_sweep_page_marks_its_models_and_the_probe_and_drops_the_base_model_first() -> None:
    items = [
        _model(name="genres v2 (apl)"),
        _model(name="genres v2 (apl)", kind="linear_probe"),
        _model(sweep_id=SWEEP, role="replicate", loss="focal"),
        _model(sweep_id=SWEEP, role="replicate", loss="bce"),
    ]
    lines = _render(models_table(items, False))
    assert all(len(line) <= 80 for line in lines)
    rows = _cells(lines, ["id", "name", "dataset", "loss", "role", "sweep", "mAP", "created"])
    assert [(r["name"], r["loss"], r["role"], r["sweep"]) for r in rows] == [
        ("genresv2(apl)", "apl", "-", "-"),
        ("genresv2(apl)", "apl", "probe", "-"),
        ("-", "focal", "replicate", "77aa88bb"),
        ("-", "bce", "replicate", "77aa88bb"),
    ]
    wide = models_table(items, True)
    wide_lines = _render(wide, wide.natural_width())
    assert {"base", "modality", "labels", "micro-F1", "job"} <= set(wide_lines[0].split())
    assert SWEEP in wide_lines[4] and "mobilenetv2-100" in wide_lines[4]


def test_a_filtered_column_is_left_out() -> None:
    items = [_model(sweep_id=SWEEP, role="replicate")]
    header = _render(models_table(items, False, filtered=("dataset", "sweep")))[0].split()
    assert header == ["id", "name", "loss", "role", "base", "model", "mAP", "created"]


def test_the_job_list_marks_sweep_children_and_keeps_its_columns_without_them() -> None:
    plain = _render(jobs_table([_job(name="movies-apl-baseline")], False))
    assert plain[0].split() == ["id", "name", "status", "base", "model", "loss", "epoch", "mAP", "created"]
    items = [
        _job(name="movies-apl-baseline"),
        _job(sweep_id=SWEEP, role="trial", status="running", best_metrics={"map": 0.5, "so_far": True}),
        _job(sweep_id=SWEEP, role="replicate"),
    ]
    lines = _render(jobs_table(items, False))
    assert all(len(line) <= 80 for line in lines)
    # Role, epoch and base model give way, in that order; the sweep column marks the children.
    rows = _cells(lines, ["id", "name", "status", "loss", "sweep", "mAP", "created"])
    assert [(r["name"], r["sweep"], r["mAP"]) for r in rows] == [
        ("movies-apl-baseline", "-", "0.510"),
        ("-", "77aa88bb", "0.500sofar"),
        ("-", "77aa88bb", "0.510"),
    ]
    roomy = _cells(
        _render(jobs_table(items, False), 120),
        ["id", "name", "status", "base model", "loss", "sweep", "role", "epoch", "mAP", "created"],
    )
    assert [r["role"] for r in roomy] == ["-", "trial", "replicate"]
