"""Routes are adapters: they reach the database only through api.deps (`DatabaseDep`, `SessionDep`).

A route that opens its own session (core.db.session, `session_factory`, a sessionmaker)
holds connections the request's accounting does not see and puts a use case in the HTTP
layer; such work belongs in api/services, which the route calls. The import-linter
contract in pyproject.toml says the same for direct imports; this also catches names.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROUTES = Path(__file__).resolve().parents[2] / "api" / "routes"
#: Module imported or names used only by code that makes sessions itself.
FORBIDDEN_MODULE = "core.db.session"
FORBIDDEN_NAMES = frozenset({"session_factory", "session_scope", "sessionmaker"})


def violations(source: str) -> list[str]:
    """Each place in `source` that imports the session module or names a session maker."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name == FORBIDDEN_MODULE]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {a.name for a in node.names}
            if module == FORBIDDEN_MODULE or (module == "core.db" and "session" in names):
                found.append(f"{node.lineno}: from {module} import {', '.join(sorted(names))}")
            found += [f"{node.lineno}: imports {n}" for n in sorted(names & FORBIDDEN_NAMES)]
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"{node.lineno}: uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            found.append(f"{node.lineno}: uses .{node.attr}")
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


def test_the_check_sees_every_way_to_open_a_session() -> None:
    source = (
        "import core.db.session\n"
        "from core.db import session\n"
        "from core.db.session import get_engine\n"
        "from sqlalchemy.orm import sessionmaker\n"
        "def route(settings):\n"
        "    with session_factory(settings)() as s:\n"
        "        return core.db.session.session_scope(settings)\n"
    )
    assert [line.split(":")[0] for line in violations(source)] == ["1", "2", "3", "4", "6", "7"]
    assert violations("from api.deps import DatabaseDep, SessionDep\nfrom core.db.models import Job\n") == []


def test_no_route_opens_a_database_session_itself() -> None:
    modules = sorted(ROUTES.glob("*.py"))
    assert len(modules) >= 8, modules  # the routers are all there (datasets, jobs, models, ...)
    found = {path.name: hits for path in modules if (hits := violations(path.read_text(encoding="utf-8")))}
    assert found == {}, f"routes reach the database only through api.deps: {found}"
