"""CLI tables at 80 columns: ids stay whole, sample texts and label lists wrap, the least needed go."""

from __future__ import annotations

import io

from rich.console import Console

from aplserve.commands.common import table

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
