"""docs/configuration.md, written from the one Settings class so the reference cannot drift.

`python -m core.settings_reference` rewrites the page; tests/test_docs.py fails when the
page differs from what this renders (a setting added without its page, or a description
changed in one place only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

from core.settings import Settings

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
PREFIX = "APLSERVE_"

_INTRO = """\
# Configuration

aplserve reads only environment variables with the `APLSERVE_` prefix, through one
pydantic-settings class (`core/settings.py`); this page is generated from it
(`python -m core.settings_reference`). The CLI and the Python client read `APLSERVE_URL`
and `APLSERVE_API_KEY` besides. Object storage also reads the standard `AWS_*` credential
variables where it is configured.

| variable | default | what it does |
|---|---|---|
"""


def _default(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        return f"`{value if value.is_absolute() else f'./{value}'}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def render_markdown() -> str:
    """The page: one row a setting, in the class's order."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        description = (field.description or "").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")
        rows.append(f"| `{PREFIX}{name.upper()}` | {_default(default)} | {description} |\n")
    return _INTRO + "".join(rows)


if __name__ == "__main__":
    DOC_PATH.write_text(render_markdown(), encoding="utf-8")
    print(DOC_PATH)
