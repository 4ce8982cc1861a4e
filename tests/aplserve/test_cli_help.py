"""The CLI's help at 80 columns: no type noise after flags and repeatable options; --version."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import typer.main
from typer.testing import CliRunner

from aplserve.cli import app


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


def test_every_help_page_reads_without_python_types() -> None:
    runner = CliRunner()
    paths = _command_paths(typer.main.get_command(app))
    assert ("jobs", "create") in paths and ("sweeps", "create") in paths and len(paths) > 20
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        for noise in ("<bool>", "list[", "<list"):
            assert noise not in result.output, (path, noise, result.output)
    create = runner.invoke(app, ["jobs", "create", "--help"], env={"COLUMNS": "80"}).output
    assert "--metadata" in create and "<str>" in create  # a repeatable option still says what it takes
    assert "<int" in create  # and a valued option keeps its type


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"aplserve {version('aplserve')}"
