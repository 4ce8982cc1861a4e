"""Alembic: upgrade to head, no drift between models and revisions, downgrade to base.

Run on a fresh SQLite file and a fresh PostgreSQL database (not the session's
shared one, which other tests keep at head).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from aplserve.cli import app as cli
from core.db.migrate import check_models_match, downgrade_to_base, script_location, upgrade_to_head
from core.db.models import Base
from core.settings import Settings, get_settings
from tests.services import POSTGRES_ADMIN_URL, require_service, unique_name

REPO = Path(__file__).resolve().parents[2]
TABLES = {table.name for table in Base.metadata.sorted_tables}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_settings(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(data_dir=data_dir)
        return
    admin = make_url(POSTGRES_ADMIN_URL)
    require_service("PostgreSQL", admin.host or "127.0.0.1", admin.port or 5432)
    name = unique_name("aplserve_migr")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        yield Settings(data_dir=data_dir, database_url=url)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _tables(settings: Settings) -> set[str]:
    engine = create_engine(settings.resolved_database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_check_downgrade_roundtrip(fresh_settings: Settings) -> None:
    upgrade_to_head(fresh_settings)
    assert _tables(fresh_settings) == TABLES | {"alembic_version"}
    check_models_match(fresh_settings)  # raises when models and revisions differ
    downgrade_to_base(fresh_settings)
    assert _tables(fresh_settings) == {"alembic_version"}
    upgrade_to_head(fresh_settings)
    check_models_match(fresh_settings)


def test_migrate_command_uses_the_configured_database(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APLSERVE_DATA_DIR", str(fresh_settings.data_dir))
    if fresh_settings.database_url:
        monkeypatch.setenv("APLSERVE_DATABASE_URL", fresh_settings.database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["migrate"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert _tables(fresh_settings) >= TABLES


def test_migrations_are_found_through_the_package() -> None:
    location = script_location()
    assert (location / "env.py").is_file()
    assert list((location / "versions").glob("0001_*.py"))


def test_alembic_ini_at_the_repo_root_works_with_the_alembic_command(data_dir: Path) -> None:
    env = {**os.environ, "APLSERVE_DATA_DIR": str(data_dir)}
    env.pop("APLSERVE_DATABASE_URL", None)
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(alembic + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert (data_dir / "aplserve.db").is_file()
