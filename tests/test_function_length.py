"""No function in the shipped packages grows past MAX_LINES.

A function that long mixes several steps; splitting it is cheaper while it is small.
The count runs from the `def` line to the last line of the body (docstring included,
decorators not), for functions, methods and nested functions alike. Run
`python -m tests.test_function_length` to list the longest ones.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The packages that ship; `core` is checked once it exists.
PACKAGES = ("apl", "api", "core", "worker", "aplserve")
MAX_LINES = 100


@dataclass(frozen=True)
class FunctionSpan:
    path: Path
    line: int
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} {self.name} ({self.lines} lines)"


def function_spans(source: str, path: Path) -> list[FunctionSpan]:
    """Every function and method in `source`, nested ones included, with its length in lines."""
    spans = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            end = node.end_lineno or node.lineno
            spans.append(FunctionSpan(path, node.lineno, node.name, end - node.lineno + 1))
    return spans


def package_spans() -> list[FunctionSpan]:
    spans = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            spans.extend(function_spans(path.read_text(encoding="utf-8"), path))
    return spans


def test_the_counter_sees_methods_nested_functions_and_whole_bodies() -> None:
    source = "class A:\n    async def m(self):\n        def inner():\n            pass\n\n        return 1\n"
    spans = {s.name: s.lines for s in function_spans(source, ROOT / "example.py")}
    assert spans == {"m": 5, "inner": 2}


def test_every_present_package_is_scanned() -> None:
    spans = package_spans()
    present = [p for p in PACKAGES if (ROOT / p).is_dir()]
    scanned = {s.path.relative_to(ROOT).parts[0] for s in spans}
    assert "apl" in present and scanned == set(present)
    assert "train" in {s.name for s in spans}


def test_no_function_is_longer_than_the_limit() -> None:
    too_long = [str(s) for s in package_spans() if s.lines > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines:\n" + "\n".join(too_long)


if __name__ == "__main__":
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    for span in sorted(package_spans(), key=lambda s: -s.lines):
        if span.lines > limit:
            print(span)
